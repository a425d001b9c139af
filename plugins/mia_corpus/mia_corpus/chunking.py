"""Split long documents into consecutive passages at paragraph boundaries, verbatim."""

import re

_BLANK = re.compile(r"\n[ \t]*\n\s*")


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the paragraphs of ``text`` (blank-line separated)."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for gap in _BLANK.finditer(text):
        if text[pos:gap.start()].strip():
            spans.append((pos, gap.start()))
        pos = gap.end()
    if text[pos:].strip():
        spans.append((pos, len(text.rstrip())))
    return spans


def chunk(text: str, target_chars: int) -> list[str]:
    """Group paragraphs into passages of at least ``target_chars`` characters.

    Each passage is an exact substring of ``text`` (original line breaks and spacing kept),
    so windows cut from it match the published document. A short remainder joins the passage
    before it; a document shorter than ``target_chars`` stays whole.
    """
    spans = paragraphs(text)
    if not spans:
        return []
    groups: list[list[tuple[int, int]]] = [[]]
    for span in spans:
        current = groups[-1]
        if current and current[-1][1] - current[0][0] >= target_chars:
            groups.append([span])
        else:
            current.append(span)
    if len(groups) > 1 and groups[-1][-1][1] - groups[-1][0][0] < target_chars // 2:
        groups[-2].extend(groups.pop())
    return [text[g[0][0]:g[-1][1]] for g in groups]
