"""The ``mia`` command line: one module per command group, gathered here.

Command modules import heavy libraries only inside their commands, so ``mia --help``
and ``mia plugins`` never import torch.
"""

import click

from mia_core import __version__
from mia_core.cli import attack_cmd, calibrate_cmd, demo_cmd, plugins_cmd, prefix_cmd, prompt_cmd, score_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mia")
def cli() -> None:
    """mia: test string membership and memorization in language models.

    Typical flow: mia prefix → mia prompt → mia score (and mia attack for membership).
    """


for _module in (demo_cmd, plugins_cmd, prefix_cmd, prompt_cmd, score_cmd, attack_cmd, calibrate_cmd):
    for _command in _module.commands:
        cli.add_command(_command)


def main() -> None:
    cli()
