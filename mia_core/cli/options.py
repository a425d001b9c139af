"""Options and parameter types shared by several commands."""

from collections.abc import Iterable

import click


def parse_key_values(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``("a=1", "b=x")`` → ``{"a": "1", "b": "x"}``; a pair without ``=`` is a usage error."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{flag} expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
dataset_option = click.option("--dataset-option", "--dataset_option", "dataset_options", multiple=True,
                              metavar="KEY=VALUE", help="Option for the dataset loader (repeatable).")
model_option = click.option("--model-option", "--model_option", "model_options", multiple=True,
                            metavar="KEY=VALUE", help="Option for the model backend (repeatable).")
