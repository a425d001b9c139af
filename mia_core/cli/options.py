"""Options and parameter types shared by several commands.

Every numeric option uses one of the validating types here (:class:`Number`, :class:`Count`), so the
command line and ``--config`` files (whose values arrive as TOML types) are checked the same way:
a table, a list or a boolean where a number belongs, NaN, ±infinity, and an integer beyond what
int64 holds (2**63 − 1: numpy arrays, HDF5 attributes, seeds) are one usage line naming the option.
"""

import math
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

INT64_MAX = 2**63 - 1


def _scalar_or_fail(kind: click.ParamType, value: Any, param: click.Parameter | None,
                    ctx: click.Context | None) -> None:
    """A config file can give any TOML value: only strings and numbers can be numbers."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        what = "a table" if isinstance(value, dict) else "a list" if isinstance(value, (list, tuple)) \
            else f"a {type(value).__name__}"
        kind.fail(f"expects a number, got {what} ({value!r})", param, ctx)


class Number(click.FloatRange):
    """A finite float within optional bounds: NaN and ±infinity are refused (``--max-cost nan`` would
    turn the cap off, ``--temperature inf`` is no distribution)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _scalar_or_fail(self, value, param, ctx)
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number (NaN and infinity are refused)", param, ctx)
        return super().convert(number, param, ctx)


class Count(click.IntRange):
    """An integer within bounds, at most 2**63 − 1 (what an int64 array, an HDF5 attribute and a seed
    hold); a float with a fractional part is refused rather than cut."""

    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None, **kwargs: Any) -> None:
        super().__init__(min=min, max=INT64_MAX if max is None else max, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _scalar_or_fail(self, value, param, ctx)
        if isinstance(value, float) and not value.is_integer():
            self.fail(f"{value!r} is not an integer", param, ctx)
        if isinstance(value, float):
            value = int(value)
        return super().convert(value, param, ctx)


#: A seed: what numpy, torch and an int64 attribute all take.
SEED = Count(0, INT64_MAX)


def positive_ints(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """Click callback: ``"1,10,100"`` → ``(1, 10, 100)``, in the order given; anything else is a usage error."""
    try:
        values = tuple(int(v) for v in value.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise click.BadParameter(f"expects positive integers separated by commas, got {value!r}")
    return values


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
_model_option = click.option("--model-option", "--model_option", "model_options", multiple=True,
                             metavar="KEY=VALUE", help="Option for the model backend (repeatable).")


def _use_ray_address(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:  # read where the replicas start (mia_core.data_parallel), as Ray itself reads it
        os.environ["RAY_ADDRESS"] = value


ray_address_option = click.option(
    "--ray-address", "--ray_address", metavar="ADDRESS", expose_value=False, callback=_use_ray_address,
    help="The Ray cluster that runs the replicas of --model-option data_parallel_size=N (HOST:PORT of "
         "`ray start --head`; default: a local cluster started for this command; docs/scale.md).")


def model_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--model-option KEY=VALUE`` and ``--ray-address``: every command that loads a model has both."""
    return _model_option(ray_address_option(command))

# The prefix map is named the same way by every command that reads one (the seed's spelling
# and its dashed twin); `mia attack` also keeps its older positional MAP.
prefix_map_option = click.option("--prefix_map", "--prefix-map", "prefix_map", metavar="MAP",
                                 help="Prefix map: a folder name under Prefixes/ or a path.")


def one_prefix_map(positional: str | None, option: str | None) -> str | None:
    """The map given positionally or with --prefix_map (the same one if both)."""
    if positional is not None and option is not None and positional != option:
        raise click.UsageError(f"two prefix maps given ({positional!r} and --prefix_map {option!r}); give one")
    return option if option is not None else positional


def renamed_option(old: str, new: str, why: str = "", *, dest: str | None = None) -> Callable[[F], F]:
    """A hidden option for a spelling that changed. Without ``dest`` using it is a usage error
    that names ``new``; with ``dest`` its value still arrives (as ``dest``), with a note."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if ctx.get_parameter_source(param.name or "") is not click.core.ParameterSource.COMMANDLINE:
            return value
        message = f"{old} is now {new} {why}".rstrip()
        if dest is None:
            raise click.UsageError(message, ctx)
        click.echo(f"note: {message}; {old} still works for now", err=True)
        return value

    if dest is None:  # its own name: the new option may have taken the old one's (``k``)
        return click.option(old, "renamed_" + old.lstrip("-").replace("-", "_"), hidden=True, expose_value=False,
                            callback=callback)
    return click.option(old, dest, hidden=True, callback=callback)
