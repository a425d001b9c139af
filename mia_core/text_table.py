"""The one plain-text table every command prints (scores, attack metrics, calibration, ``mia show``,
``mia models``, the demo)."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[object], rows: Sequence[Sequence[object]], indent: str = "",
               right: Sequence[int] = ()) -> str:
    """Columns as wide as their widest cell, two spaces apart, a rule of dashes under the header,
    no trailing spaces. Cells are shown with ``str``; the columns numbered in ``right`` (numbers)
    are right-aligned; every line starts with ``indent``."""
    head = [str(h) for h in header]
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(head)]
    lines = [head, ["-" * w for w in widths], *cells]
    return "\n".join(
        (indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                            for i, (c, w) in enumerate(zip(line, widths, strict=True)))).rstrip()
        for line in lines)
