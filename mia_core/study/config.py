"""The study's configuration: a TOML file with one table per step, keys named as the commands'
options, validated whole before anything runs (docs/study.md lists the schema)."""

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_core.defaults import DEFAULT_DATASET, DEFAULT_MODEL
from mia_core.errors import MiaError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Key:
    """One configuration key: its accepted types, default, the command option it mirrors, and help."""

    kind: str  # "int", "float", "str", "bool", "int_or_str", "floats", "options"
    default: Any
    flag: str  # the CLI spelling of the same option
    help: str
    minimum: float | None = None


def _k(kind: str, default: Any, flag: str, help: str, minimum: float | None = None) -> Key:
    return Key(kind, default, flag, help, minimum)


SCHEMA: dict[str, dict[str, Key]] = {
    "study": {
        "name": _k("str", None, "mia study --name", "the study's folder under studies/ (default: MODEL_DATASET)"),
        "model": _k("str", DEFAULT_MODEL, "mia study --model", "the model prompted, checked and attacked"),
        "dataset": _k("str", DEFAULT_DATASET, "mia study --dataset", "the dataset (a name or a path)"),
        "model_options": _k("options", {}, "mia prompt --model-option KEY=VALUE", "the backend's options"),
        "dataset_options": _k("options", {}, "mia prefix --dataset-option KEY=VALUE", "the dataset's options"),
        "limit": _k("int", None, "mia study --limit", "only N samples, balanced over labels (a quick look)", 1),
        "seed": _k("int", 0, "mia prefix --seed", "seed of every random draw (sample selection, bootstrap)", 0),
    },
    "prefix": {
        "prefix_tokens": _k("int", 32, "mia prefix --prefix_tokens", "prefix length in tokens", 1),
        "suffix_tokens": _k("int", 50, "mia prefix --suffix_tokens", "true continuation kept", 1),
        "prefix_loc": _k("int_or_str", "start", "mia prefix --prefix_loc", "start, random or a token offset"),
        "size": _k("int", None, "mia prefix --size", "samples in the map (default all)", 1),
    },
    "prompt": {
        "enabled": _k("bool", True, "(study only)", "generate continuations (mia prompt)"),
        "max_length": _k("int", None, "mia prompt --max_length", "new tokens (default: suffix_tokens)", 1),
        "batch_size": _k("int", 10, "mia prompt --batch_size", "prompts per batch", 1),
        "temperature": _k("float", None, "mia prompt --temperature", "sampling temperature (default greedy)", 0),
        "top_k": _k("int", None, "mia prompt --top_k", "top-k sampling", 1),
        "top_p": _k("float", None, "mia prompt --top_p", "top-p sampling", 0),
        "max_cost": _k("float", None, "mia prompt --max-cost", "hard cap in dollars (API models)", 0),
    },
    "check": {
        "enabled": _k("bool", True, "(study only)", "the teacher-forced greedy-extraction check (mia check)"),
        "batch_size": _k("int", 10, "mia check --batch_size", "sequences per batch", 1),
    },
    "score": {
        "index": _k("str", None, "mia score --index", "a corpus index folder (corpus membership)"),
        "window": _k("int", 50, "mia score --window", "corpus-membership window in tokens", 1),
        "edit_threshold": _k("float", 0.1, "mia score --edit-threshold", "approximate-match threshold", 0),
    },
    "attack": {
        "enabled": _k("bool", True, "(study only)", "membership signals (mia attack; only with labelled data)"),
        "signals": _k("str", "loss,zlib,mink,minkpp", "mia attack --signals", "comma-separated signals"),
        "reference": _k("str", None, "mia attack --reference", "reference model (the ref signal)"),
        "min_k_fraction": _k("str", "0.2", "mia attack --min-k-fraction", "Min-K% fraction(s)"),
        "bootstrap": _k("int", 1000, "mia attack --bootstrap", "bootstrap resamples of the intervals", 0),
        "batch_size": _k("int", 8, "mia attack --batch-size", "strings per batch", 1),
        "max_tokens": _k("int", 512, "mia attack --max-tokens", "longest string scored", 1),
    },
    "dataset_inference": {
        "enabled": _k("bool", True, "(study only)", "dataset inference on the attack's signals (members = suspect "
                      "set, non-members = validation set; needs 20 strings of each)"),
        "splits": _k("int", 10, "mia dataset-inference --splits", "seeded fitting/testing splits", 1),
        "alpha": _k("float", 0.05, "mia dataset-inference --alpha", "level of the verdict line", 0),
    },
    "estimate": {
        "enabled": _k("bool", True, "(study only)", "Good-Turing and richness estimates (mia estimate)"),
        "t": _k("floats", [1.0, 2.0, 5.0, 10.0], "mia estimate --t", "extrapolation factors"),
        "confidence": _k("float", 1.96, "mia estimate --confidence", "Simple Good-Turing criterion", 0),
    },
    "report": {
        "enabled": _k("bool", True, "(study only)", "report.html (mia report)"),
        "examples": _k("int", 5, "mia report --examples", "longest extractions shown per run", 0),
    },
}

_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "int_or_str": "an integer or a string", "floats": "a list of numbers",
               "options": "a table of KEY = \"VALUE\" strings"}


def defaults() -> dict[str, dict[str, Any]]:
    """Every table with every key at its default."""
    return {table: {name: key.default for name, key in keys.items()} for table, keys in SCHEMA.items()}


def read_config(path: Path) -> dict[str, dict[str, Any]]:
    """The TOML file ``path`` validated against :data:`SCHEMA` (not merged with defaults)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MiaError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MiaError(f"{path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise MiaError(f"{path}: not valid TOML ({exc})") from None
    return validate(data, str(path))


def validate(data: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Refuse, in one line naming the key and its command-line spelling, an unknown table or key,
    a value of the wrong type or out of range; returns the values with integers made floats where a
    number is asked."""
    out: dict[str, dict[str, Any]] = {}
    for table, values in data.items():
        if table not in SCHEMA:
            raise MiaError(f"{where}: unknown table [{table}]{_did_you_mean(table, SCHEMA)} "
                           f"(tables: {', '.join(SCHEMA)})")
        if not isinstance(values, dict):
            raise MiaError(f"{where}: [{table}] must be a table of keys, got {values!r}")
        out[table] = {name: _checked(table, name, value, where) for name, value in values.items()}
    return out


def _checked(table: str, name: str, value: Any, where: str) -> Any:
    keys = SCHEMA[table]
    if name not in keys:
        raise MiaError(f"{where}: unknown key {name!r} in [{table}]{_did_you_mean(name, keys)} "
                       f"(keys: {', '.join(keys)})")
    key = keys[name]
    checked = _typed(key.kind, value)
    if checked is _WRONG:
        raise MiaError(f"{where}: [{table}] {name} must be {_KIND_WORDS[key.kind]} (as {key.flag}), got {value!r}")
    if key.minimum is not None and isinstance(checked, (int, float)) and checked < key.minimum:
        raise MiaError(f"{where}: [{table}] {name} must be at least {key.minimum:g} (as {key.flag}), got {value!r}")
    return checked


_WRONG = object()


def _typed(kind: str, value: Any) -> Any:
    """``value`` as ``kind`` asks, or ``_WRONG``; TOML's bool is never taken for an integer."""
    if isinstance(value, bool):
        return value if kind == "bool" else _WRONG
    if kind == "int" or kind == "int_or_str":
        if isinstance(value, int) or (kind == "int_or_str" and isinstance(value, str)):
            return value
        return _WRONG
    if kind == "float":
        return float(value) if isinstance(value, (int, float)) else _WRONG
    if kind == "str":
        return value if isinstance(value, str) else _WRONG
    if kind == "floats":
        ok = isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       and v >= 0 for v in value)
        return [float(v) for v in value] if ok else _WRONG
    if kind == "options":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return dict(value) if ok else _WRONG
    return _WRONG


def _did_you_mean(name: str, choices: Any) -> str:
    """A close name, with its command-line spelling when the choices are keys."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    if not close:
        return ""
    flag = choices[close[0]].flag if isinstance(choices[close[0]], Key) else None
    return f" (did you mean {close[0]!r}" + (f", {flag}" if flag else "") + "?)"


def resolve(file_values: dict[str, dict[str, Any]], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Defaults, then the file's values, then the command line's (``overrides``: [study] keys given)."""
    config = defaults()
    for table, values in file_values.items():
        config[table].update(values)
    config["study"].update({k: v for k, v in overrides.items() if v is not None})
    if config["prompt"]["max_length"] is None:
        config["prompt"]["max_length"] = config["prefix"]["suffix_tokens"]
    if not (config["prompt"]["enabled"] or config["check"]["enabled"]):
        raise MiaError("the study needs [prompt] or [check] enabled (a run to score)")
    _check_values(config)
    return config


def _check_values(config: dict[str, dict[str, Any]]) -> None:
    """The values whose meaning the steps parse (a prefix location, signal names, fractions, a sampling
    scheme), parsed now: a bad one is one line naming its key before anything runs, not a failure after
    the paid steps."""
    from mia_core.attack.signals import parse_fractions, parse_signals
    from mia_core.errors import UsageError
    from mia_core.extraction.prefix import parse_prefix_loc
    from mia_core.types import Sampling

    def refuse(table: str, name: str, why: str) -> MiaError:
        return MiaError(f"study configuration: [{table}] {name}: {why} (as {SCHEMA[table][name].flag})")

    checks = (("prefix", "prefix_loc", parse_prefix_loc), ("attack", "signals", parse_signals),
              ("attack", "min_k_fraction", parse_fractions))
    for table, name, parse in checks:
        try:
            parse(config[table][name])
        except ValueError as exc:
            raise refuse(table, name, str(exc)) from None
    attack = config["attack"]
    if "ref" in parse_signals(attack["signals"]) and not attack["reference"]:
        raise refuse("attack", "signals", "the ref signal needs a reference model: set [attack] reference")
    prompt = config["prompt"]
    try:
        Sampling(temperature=prompt["temperature"] or 0.0, top_k=prompt["top_k"], top_p=prompt["top_p"])
    except UsageError as exc:
        raise refuse("prompt", exc.option or "temperature", exc.message) from None


def study_name(config: dict[str, dict[str, Any]]) -> str:
    """The study's folder name: [study] name, or MODEL_DATASET made safe for a file name."""
    from mia_core.formats.names import safe_name

    study = config["study"]
    return safe_name(study["name"] or f"{study['model']}_{Path(study['dataset']).name}")
