"""Expected errors: one clear line for the user, a non-zero exit, no traceback.

Plain exceptions: the library never speaks click. The ``mia`` command translates them
once (``mia_core.cli``): ``exit_code`` is the process's exit status, ``message`` the line
printed after ``Error:``; a ``UsageError`` is shown with the command's usage line.
"""


class MiaError(Exception):
    """A failure the user can fix (bad file, missing model, ...): exit code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message  # may be extended by callers (e.g. "rows kept; resume with ...")

    def __str__(self) -> str:
        return self.message

    def format_message(self) -> str:
        return self.message


class UsageError(MiaError):
    """A bad value or combination of options: exit code 2. ``option`` names the option at fault by
    its Python name (``max_cost``, the keyword of the library function); the CLI shows it as the flag
    (``--max-cost``), in one place (``mia_core.cli.to_click``)."""

    exit_code = 2

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class UnknownNameError(UsageError):
    """A name the user typed that nothing registers: exit code 2."""


class BackendOutOfMemory(MiaError):
    """A batch did not fit in memory; callers halve the batch size and retry."""


class DiskError(MiaError):
    """A write refused by the file system (full disk, read-only folder, ...): one line, exit code 1."""
