"""The membership-label vocabulary, one table for the core and every plugin.

Datasets, label files and maps spell membership many ways (1/0, true/false, in/out, the
train/test of a split, the seen/unseen of a corpus); every reader maps them to
``types.MEMBER``/``types.NONMEMBER`` through ``label_from_text``, so a spelling accepted in one
place is accepted everywhere.
"""

from typing import Any

from mia_core.types import MEMBER, NONMEMBER

# Aligned pairs (a member spelling and its nonmember twin), then nonmember-only spellings.
# "1.0"/"0.0": labels pandas and Parquet write as floats, read back as text.
MEMBER_SPELLINGS = ("member", "members", "1", "1.0", "true", "yes", "in", "seen", "train")
NONMEMBER_SPELLINGS = ("nonmember", "nonmembers", "0", "0.0", "false", "no", "out", "unseen", "test",
                       "non-member", "non_member")
ACCEPTED = ", ".join(f"{m}/{n}" for m, n in zip(MEMBER_SPELLINGS, NONMEMBER_SPELLINGS, strict=False))

_LABELS = {**dict.fromkeys(MEMBER_SPELLINGS, MEMBER), **dict.fromkeys(NONMEMBER_SPELLINGS, NONMEMBER)}


def label_from_text(value: Any) -> str | None:
    """``MEMBER`` or ``NONMEMBER`` for any spelling of the table (case and surrounding spaces
    ignored, a bool as its truth value); ``None`` for anything else, empty included."""
    if isinstance(value, bool):
        return MEMBER if value else NONMEMBER
    if value is None:
        return None
    return _LABELS.get(str(value).strip().lower())


def is_blank(value: Any) -> bool:
    """No label at all (absent or empty), as opposed to a spelling the table lacks."""
    return value is None or (isinstance(value, str) and not value.strip())
