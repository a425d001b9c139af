"""The strings an attack scores: a prefix map's windows or a dataset's samples, as model tokens."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mia_core.attack.labels import normalize_label
from mia_core.progress import note, progress
from mia_core.types import Backend, Sample

ENCODE_BATCH = 64


@dataclass
class Item:
    """One string to score. Map windows carry their row and how many trailing tokens are suffix."""

    sample_id: str
    label: str
    tokens: list[int]
    text: str
    truncated: bool = False
    row: int = -1
    suffix_length: int = 0



def load_map_items(prefix_map: Any, backend: Backend, max_tokens: int | None, limit: int | None = None,
                   quiet: bool = False) -> tuple[list[Item], dict[str, int]]:
    """The map's prefix+suffix windows as model tokens. A map made with another tokenizer is
    retokenized: prefix and suffix are decoded by the map's tokenizer and encoded by the model's."""
    from mia_core import registry

    n = len(prefix_map) if limit is None else min(limit, len(prefix_map))
    rows = slice(0, n)
    prefixes = prefix_map.read("prefixes", rows)
    suffixes = prefix_map.suffixes(rows)
    ids = [str(v) for v in prefix_map.read("sample_id", rows)]
    labels = [normalize_label(v) for v in prefix_map.read("sample_label", rows)]
    tokenizer = backend.tokenizer
    counts = {"rows": n, "retokenized": 0, "truncated": 0}
    if prefix_map.tokenizer_fingerprint == tokenizer.fingerprint:
        windows = [list(map(int, p)) + list(map(int, s)) for p, s in zip(prefixes, suffixes, strict=True)]
        suffix_lengths = [len(s) for s in suffixes]
    else:
        note(f"the map was tokenized by {prefix_map.tokenizer_name!r}, not the model's tokenizer: "
            "retokenizing its prefixes and suffixes", quiet)
        map_tok = registry.tokenizers.create(prefix_map.tokenizer_name)
        p_text = map_tok.decode_batch([list(map(int, p)) for p in prefixes])
        s_text = map_tok.decode_batch([list(map(int, s)) for s in suffixes])
        p_ids, s_ids = tokenizer.encode_batch(p_text), tokenizer.encode_batch(s_text)
        windows = [list(p) + list(s) for p, s in zip(p_ids, s_ids, strict=True)]
        suffix_lengths = [len(s) for s in s_ids]
        counts["retokenized"] = n
    items = []
    for i, window in enumerate(windows):
        truncated = max_tokens is not None and len(window) > max_tokens
        if truncated:  # keep the suffix: drop prefix tokens from the left
            window = window[len(window) - max_tokens:]
            counts["truncated"] += 1
        items.append(Item(ids[i], labels[i], window, "", truncated, row=i,
                          suffix_length=min(suffix_lengths[i], len(window))))
    texts = tokenizer.decode_batch([it.tokens for it in items]) if items else []
    for item, text in zip(items, texts, strict=True):
        item.text = text
    if counts["truncated"]:
        note(f"{counts['truncated']} window(s) longer than {max_tokens} tokens lost prefix tokens on the left", quiet)
    return items, counts


def load_dataset_items(samples: Iterable[Sample], backend: Backend, max_tokens: int | None,
                       labels: dict[str, str] | None = None, limit: int | None = None, total: int | None = None,
                       quiet: bool = False) -> tuple[list[Item], dict[str, int]]:
    """Dataset samples tokenized by the model's tokenizer; the first ``max_tokens`` tokens of
    longer samples are kept. Empty samples are skipped and counted."""
    tokenizer = backend.tokenizer
    counts = {"samples": 0, "empty": 0, "truncated": 0}
    items: list[Item] = []
    pending: list[Sample] = []

    def flush() -> None:
        encoded = tokenizer.encode_batch([s.text for s in pending])
        cut = []
        for sample, ids in zip(pending, encoded, strict=True):
            if not ids:
                counts["empty"] += 1
                continue
            label = labels.get(sample.id, "") if labels is not None else normalize_label(sample.label)
            truncated = max_tokens is not None and len(ids) > max_tokens
            item = Item(sample.id, label, list(ids[:max_tokens] if truncated else ids), sample.text, truncated)
            if truncated:
                counts["truncated"] += 1
                cut.append(item)
            items.append(item)
        for item, text in zip(cut, tokenizer.decode_batch([it.tokens for it in cut]) if cut else [], strict=True):
            item.text = text  # zlib and the reference see exactly the scored text
        pending.clear()

    bar_total = min(total, limit) if total is not None and limit is not None else (limit or total)
    with progress(total=bar_total, desc="reading", unit="sample", quiet=quiet) as bar:
        for sample in samples:
            if limit is not None and counts["samples"] >= limit:
                break
            counts["samples"] += 1
            bar.update(1)
            if not sample.text or not sample.text.strip():
                counts["empty"] += 1
                continue
            pending.append(sample)
            if len(pending) >= ENCODE_BATCH:
                flush()
        if pending:
            flush()
    if counts["empty"]:
        note(f"skipped {counts['empty']} empty sample(s)", quiet)
    if counts["truncated"]:
        note(f"{counts['truncated']} sample(s) longer than {max_tokens} tokens (--max-tokens, capped by the model's "
            f"context) were truncated to their first {max_tokens} tokens", quiet)
    if labels is not None:
        unknown = sum(1 for it in items if not it.label)
        if unknown:
            note(f"{unknown} sample(s) have no entry in the label file", quiet)
    return items, counts
