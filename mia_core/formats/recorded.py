"""A file reader's read-only view of a value its file records (no file library imported here)."""

from __future__ import annotations


def recorded(key: str, kind: type, record: str = "attrs") -> property:
    """A read-only property giving ``kind(self.<record>[key])``: a file reader's view of one value
    its file records (``prefix_tokens = recorded("prefix_tokens", int)``)."""
    return property(lambda self: kind(getattr(self, record)[key]), doc=f"the recorded {key!r}, as {kind.__name__}")
