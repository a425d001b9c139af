"""Expected errors: one clear line for the user, a non-zero exit, no traceback."""

import click


class MiaError(click.ClickException):
    """A failure the user can fix (bad file, missing model, ...): exit code 1."""


class UnknownNameError(click.UsageError):
    """A name the user typed that nothing registers: exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class BackendOutOfMemory(MiaError):
    """A batch did not fit in memory; callers halve the batch size and retry."""


class DiskError(MiaError):
    """A write refused by the file system (full disk, read-only folder, ...): one line, exit code 1."""
