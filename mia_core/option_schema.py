"""A plugin's options, declared once: name, type, default and help.

A plugin passes ``options=[Option(...), ...]`` to ``register``; the core then checks every
``--model-option``/``--dataset-option`` against it before the factory is imported (an unknown
name is one line with "Did you mean" and the accepted names; a value of the wrong type is one
line naming the option and the type), converts the values, and prints the table for
``mia models --options NAME`` / ``mia datasets --options NAME``. The factory receives a dict of
typed values holding only the options the user gave (its defaults are its own business; the
table shows them).

Values arrive as the strings typed on the command line, or already typed from Python and from
a run's recorded options, so each conversion accepts both. ``auto`` (or an empty value) stands
for the default: ``None`` ("let the plugin decide") when that is the default, and the default
number or boolean of a numeric or boolean option.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mia_core.errors import MiaError
from mia_core.redact import is_secret_name

TYPES = (str, int, float, bool)
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
AUTO_WORDS = ("", "auto")


@dataclass(frozen=True)
class Option:
    """One option of a registered name: ``Option("trust_remote_code", bool, False, "help")`` or
    ``Option("dtype", choices=("float32", "bfloat16"), default="float32", help="...")``."""

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"option {self.name!r}: type must be one of str, int, float, bool, got {self.type!r}")
        object.__setattr__(self, "choices", tuple(str(c) for c in self.choices))

    @property
    def type_name(self) -> str:
        return "choice" if self.choices else self.type.__name__

    @property
    def accepts_auto(self) -> bool:
        """Whether ``auto`` (or an empty value) stands for the default: always when the default is
        None ("let the plugin decide"), and for numbers and booleans, which no text can be."""
        return self.default is None or (self.type is not str and not self.choices)

    @property
    def expected(self) -> str:
        """The accepted values, as the table and the errors say them."""
        if self.choices:
            return "one of " + ", ".join([*(["auto"] if self.default is None else []), *self.choices])
        described = {bool: "true or false", int: "an integer", float: "a number", str: "any text"}[self.type]
        return described + (" (or auto)" if self.accepts_auto else "")

    def convert(self, value: Any, owner: str) -> Any:
        """``value`` as this option's type; a one-line ``MiaError`` naming the option otherwise."""
        if self.accepts_auto and (value is None or str(value).strip().lower() in AUTO_WORDS):
            return self.default
        converted = _CONVERTERS[self.type_name](self, value)
        if converted is _INVALID:
            if self.choices:
                raise MiaError(f"unknown {self.name} {value!r} for {owner}: expected {self.expected}")
            raise MiaError(f"option {self.name}={value!r} for {owner} is not {_A_TYPE[self.type]}: "
                           f"expected {self.expected}")
        return converted


_INVALID = object()
_A_TYPE = {bool: "a boolean", int: "an integer", float: "a number", str: "text"}


def _to_bool(option: Option, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in TRUE_WORDS else False if text in FALSE_WORDS else _INVALID


def _to_number(option: Option, value: Any) -> Any:
    if isinstance(value, bool):  # True is an int to Python, never a count to a user
        return _INVALID
    try:
        number = option.type(str(value).strip()) if isinstance(value, str) else option.type(value)
    except (TypeError, ValueError):
        return _INVALID
    if option.type is int and not isinstance(value, str) and number != value:
        return _INVALID  # 2.5 is not an integer, whatever int() makes of it
    return number


def _to_choice(option: Option, value: Any) -> Any:
    text = str(value).strip().lower()
    return next((c for c in option.choices if c.lower() == text), _INVALID)


_CONVERTERS = {"bool": _to_bool, "int": _to_number, "float": _to_number, "choice": _to_choice,
               "str": lambda option, value: str(value)}


def check_schema(options: Any) -> tuple[Option, ...]:
    """The ``options=`` a plugin registered, checked (a bug in the plugin raises ``TypeError``)."""
    schema = tuple(options)
    for option in schema:
        if not isinstance(option, Option):
            raise TypeError(f"options= must hold mia_core.Option objects, got {option!r}")
    names = [o.name for o in schema]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TypeError(f"options= declares {', '.join(duplicates)} twice")
    return schema


def validate(values: Mapping[str, Any], schema: Sequence[Option], owner: str, listing: str) -> dict[str, Any]:
    """``values`` checked against ``schema`` and converted; ``owner`` names the thing in errors
    (``model 'hf:gpt2'``), ``listing`` is where the table is (``mia models --options hf:ID``)."""
    by_name = {o.name: o for o in schema}
    unknown = [k for k in values if k not in by_name]
    secrets = [k for k in unknown if is_secret_name(k)]
    if secrets:  # not merely unknown: typed on a command line, a secret leaks into shell history
        raise MiaError(f"option {secrets[0]}=… for {owner} is refused: a secret on the command line leaks into "
                       f"shell history and the run's recorded options; give it as the plugin documents "
                       f"(an environment variable or a file: see {listing})")
    if unknown:
        raise MiaError(unknown_message(unknown, schema, owner, listing))
    return {key: by_name[key].convert(value, owner) for key, value in values.items()}


def unknown_message(unknown: Sequence[str], schema: Sequence[Option], owner: str, listing: str) -> str:
    names = [o.name for o in schema]
    close = [m for k in unknown for m in difflib.get_close_matches(k, names, n=1, cutoff=0.6)]
    guess = f" Did you mean {' or '.join(repr(c) for c in dict.fromkeys(close))}?" if close else ""
    accepted = ", ".join(names) if names else "none"
    return f"unknown option(s) for {owner}: {', '.join(unknown)}.{guess} Options accepted: {accepted} (see {listing})"


def table_rows(schema: Sequence[Option]) -> list[dict[str, Any]]:
    """One row per option, for ``mia models --options`` and its ``--json``."""
    return [{"option": o.name, "type": o.type_name, "default": _shown(o.default), "accepts": o.expected,
             "help": o.help} for o in schema]


def _shown(default: Any) -> Any:
    if default is None:
        return "auto"
    return str(default).lower() if isinstance(default, bool) else default
