"""Checks shared by the loaders: ``--dataset-option`` values, labels, empty datasets."""

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mia_core.errors import MiaError
from mia_core.types import MEMBER, NONMEMBER, Sample

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# "1.0"/"0.0": labels pandas and Parquet write as floats (a float 1.0 reads as the text "1.0")
_MEMBER_VALUES = {"member", "members", "1", "1.0", "true", "yes", "in", "seen"}
_NONMEMBER_VALUES = {"nonmember", "nonmembers", "non-member", "non_member", "0", "0.0", "false", "no", "out",
                     "unseen"}


def check_options(dataset: str, options: Mapping[str, Any], accepted: Iterable[str]) -> None:
    """Unknown option keys are an error that lists the accepted ones."""
    accepted = sorted(accepted)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MiaError(f"dataset {dataset!r} does not accept option(s) {', '.join(unknown)}; "
                       f"accepted: {', '.join(accepted)}")


def parse_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise MiaError(f"option {key}={value!r}: expected true or false")


def parse_choice(value: Any, key: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    text = str(value).strip().lower()
    if text not in choices:
        raise MiaError(f"option {key}={value!r}: expected one of {', '.join(choices)}")
    return text


def normalize_label(value: Any, where: str) -> str | None:
    """Map a label value to ``member``/``nonmember`` (``None`` when empty/unknown is absent).

    Accepts the two names and the usual encodings (1/0, true/false, yes/no); anything else is
    an error rather than a silent guess, since labels decide the evaluation.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return MEMBER if value else NONMEMBER
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in _MEMBER_VALUES:
        return MEMBER
    if text in _NONMEMBER_VALUES:
        return NONMEMBER
    raise MiaError(f"{where}: label {value!r} is neither member nor nonmember (accepted: member/nonmember, "
                   "1/0, 1.0/0.0, true/false, yes/no)")


def non_empty(samples: Iterable[Sample], what: str, hint: str = "") -> Iterator[Sample]:
    """Pass ``samples`` through; an error at the end if there were none (an empty dataset
    would otherwise surface later as a puzzling "no usable sample")."""
    empty = True
    for sample in samples:
        empty = False
        yield sample
    if empty:
        raise MiaError(f"{what} has no samples" + (f" ({hint})" if hint else ""))
