"""The ``mia`` command line: one module per command group, gathered here.

Command modules import heavy libraries only inside their commands, so ``mia --help``
and ``mia plugins`` never import torch. The library raises plain exceptions
(``mia_core.errors``); this is the one place they become click's one-line errors and exit
codes: ``MiaError`` 1 (or its ``exit_code``, e.g. 3 for a run stopped at its cost cap),
``UsageError``/``UnknownNameError`` 2 with the command's usage line; a write refused by the
system (no space, read-only, permission) that a command did not handle itself, 1.
"""

from typing import Any

import click

from mia_core import __version__, plugins
from mia_core.cli import (
    attack_cmd,
    calibrate_cmd,
    demo_cmd,
    index_cmd,
    merge_cmd,
    plugins_cmd,
    prefix_cmd,
    prompt_cmd,
    report_cmd,
    score_cmd,
    setlevel_cmd,
    study_cmd,
)
from mia_core.cli.config import add_config_option
from mia_core.cli.show_cmd import show_command
from mia_core.errors import MiaError, UsageError
from mia_core.formats.provenance import record_invocation
from mia_core.formats.safeio import disk_error, is_disk_error
from mia_core.progress import clear_bars, set_quiet
from mia_core.redact import redact_text

#: Option names of every command, so a config file's top-level key is checked against them all.
KNOWN_OPTIONS: set[str] = set()


def to_click(exc: MiaError, ctx: click.Context | None) -> click.ClickException:
    """The click exception that prints ``exc`` in one line (no secret in it) and exits with its code;
    bars the error interrupted are erased first, so the line starts clean."""
    clear_bars()
    exc.message = redact_text(exc.message)
    if isinstance(exc, UsageError):
        if exc.option:
            return click.BadParameter(exc.message, ctx, param_hint=option_flag(exc.option, ctx))
        return click.UsageError(exc.message, ctx)
    translated = click.ClickException(exc.message)
    translated.exit_code = exc.exit_code
    return translated


def option_flag(option: str, ctx: click.Context | None) -> str:
    """The flag the user typed for the library keyword ``option`` (``max_cost`` -> ``--max-cost``): the
    first spelling the command declares, else ``--option`` (a plugin command's own names)."""
    for param in ctx.command.params if ctx is not None else ():
        if param.name == option and param.opts:
            return param.opts[0]
    return f"--{option}"


class MiaContext(click.Context):
    """Translates library errors raised by a command while the command's context is current
    (so a usage error shows that command's usage line)."""

    def invoke(self, callback: Any, *args: Any, **kwargs: Any) -> Any:
        if self.command.callback is not None and callback is self.command.callback:
            # the effective options (command line, config file, defaults), recorded in every file written
            record_invocation(self.command_path.partition(" ")[2] or self.command_path, self.params,
                              self.meta.get("mia_config_file"))
            set_quiet(bool(self.params.get("quiet")))
        try:
            return super().invoke(callback, *args, **kwargs)
        except MiaError as exc:
            raise to_click(exc, self) from None
        except OSError as exc:
            # The net under every command: a write the command did not guard itself (a read-only
            # or full output folder) still ends in one line, not a traceback.
            if not is_disk_error(exc):
                raise
            raise to_click(disk_error(exc, exc.filename or "the output"), self) from None


class MiaGroup(click.Group):
    """The ``mia`` group: built-in commands plus those plugins add (``mia_register_commands``)."""

    context_class = MiaContext

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _translate_errors(cmd)
        super().add_command(cmd, name)

    def plugin_commands(self) -> dict[str, tuple[str, click.Command]]:
        """Commands plugins add: name -> (plugin, command). Asked afresh on each lookup
        (cheap), so an in-process plugin's commands appear too. A plugin whose hook fails, or
        whose command would shadow another, is skipped and reported by ``mia plugins``."""
        found: dict[str, tuple[str, click.Command]] = {}
        for plugin, hook in plugins.hook_functions("mia_register_commands"):
            group = click.Group()
            try:
                hook(cli=group)
            except Exception as exc:
                plugins.record_failure(plugin, "mia_register_commands", exc)
                continue
            for name, command in group.commands.items():
                if name in self.commands or name in found:
                    plugins.record_failure(plugin, f"its command {name!r} clashes with an existing one")
                    continue
                _translate_errors(command)
                found[name] = (plugin, command)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        return self.plugin_commands().get(cmd_name, (None, None))[1]

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MiaError as exc:  # raised outside a command's own context (while resolving it)
            raise to_click(exc, ctx) from None


def _translate_errors(cmd: click.Command) -> None:
    if cmd.context_class is click.Context:
        cmd.context_class = MiaContext
    if not isinstance(cmd, click.Group):
        KNOWN_OPTIONS.update(p.name for p in cmd.params if p.name)
        for p in cmd.params:
            KNOWN_OPTIONS.update(o.lstrip("-").replace("-", "_") for o in getattr(p, "opts", []) if o.startswith("--"))
        add_config_option(cmd, KNOWN_OPTIONS)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _translate_errors(sub)


@click.group(cls=MiaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mia")
def cli() -> None:
    """mia: test string membership and memorization in language models.

    A whole study in one command: mia study (docs/study.md). Step by step: mia prefix → mia prompt →
    mia score (and mia attack for membership).
    """


for _module in (demo_cmd, plugins_cmd, prefix_cmd, prompt_cmd, merge_cmd, score_cmd, report_cmd, index_cmd, attack_cmd,
                calibrate_cmd, setlevel_cmd, study_cmd):
    for _command in _module.commands:
        cli.add_command(_command)
cli.add_command(show_command)


def main() -> None:
    cli()
