"""The continuation prompt sent in the user turn, and cleaning of the model's answer.

Recent Claude models reject an assistant prefill, so the prefix cannot be placed as the
start of the answer: the user turn asks for a verbatim continuation, and whatever
chatty preamble the model still adds ("Here is the continuation:") is stripped.
"""

import re

DEFAULT_TEMPLATE = (
    "Continue the following text exactly where it stops, as it would continue in its "
    "original source. Output only the continuation: do not repeat the given text and "
    "do not add any comment. If the text stops in the middle of a word, start with the "
    "rest of that word.\n\n<text>\n{prefix}\n</text>"
)

# A first line that announces the answer instead of being part of it.
_PREAMBLE = re.compile(
    r"""^\s*(?:(?:sure|certainly|okay|ok|of\ course|absolutely)[!,.]?\s*)?
        (?:here(?:'s|’s|\ is|\ are)|below\ is|the\ (?:text\ )?continu\w*|continu\w*|completion)
        [^\n]{0,100}?:[ \t]*\n*""",
    re.IGNORECASE | re.VERBOSE,
)
_WRAPPERS = (("<continuation>", "</continuation>"), ("<text>", "</text>"), ("```", "```"), ('"', '"'))


def build_prompt(template: str, prefix_text: str) -> str:
    """The user message for one prefix (``{prefix}`` in the template is replaced)."""
    return template.replace("{prefix}", prefix_text)


def strip_preamble(answer: str, prefix_text: str) -> str:
    """The bare continuation in ``answer``: no announcing line, wrapper or echoed prefix."""
    text = _PREAMBLE.sub("", answer, count=1)
    stripped = text.strip()
    for left, right in _WRAPPERS:
        if stripped.startswith(left) and stripped.endswith(right) and len(stripped) >= len(left) + len(right):
            text = stripped[len(left):len(stripped) - len(right)].strip("\n")
            break
    # A model that echoes the prefix first: keep only what follows it.
    head = prefix_text.strip()
    if head and text.lstrip().startswith(head):
        text = text.lstrip()[len(head):]
    return text


def join_continuation(prefix_text: str, continuation: str) -> str:
    """``continuation`` as the text directly following ``prefix_text``.

    Chat answers start without the separating space; it is restored unless the prefix
    already ends in whitespace or the continuation starts with punctuation. A prefix cut
    in the middle of a word is indistinguishable here and gets a space too (see docs).
    """
    if not continuation:
        return continuation
    if prefix_text[-1:].isspace():
        return continuation.lstrip(" \t")
    if continuation[0].isspace():
        return continuation
    if not prefix_text or continuation[0] in ".,;:!?)]}'\"’”-–—/" or prefix_text[-1] in "([{'\"‘“/-":
        return continuation
    return " " + continuation
