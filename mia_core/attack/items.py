"""The strings an attack scores: a prefix map's windows or a dataset's samples, as model tokens."""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    n = len(prefix_map) if limit is None else min(limit, len(prefix_map))
    if not _same_tokenizer(prefix_map, backend):
        note(_RETOKENIZING.format(prefix_map.tokenizer_name), quiet)
    items, counts = map_window_items(prefix_map, backend, max_tokens, slice(0, n))
    _note_truncated(counts["truncated"], max_tokens, quiet)
    return items, counts


_RETOKENIZING = ("the map was tokenized by {!r}, not the model's tokenizer: retokenizing its prefixes and "
                 "suffixes")


def _same_tokenizer(prefix_map: Any, backend: Backend) -> bool:
    return prefix_map.tokenizer_fingerprint == backend.tokenizer.fingerprint


def _note_truncated(truncated: int, max_tokens: int | None, quiet: bool) -> None:
    if truncated:
        note(f"{truncated} window(s) longer than {max_tokens} tokens lost prefix tokens on the left", quiet)


def map_window_items(prefix_map: Any, backend: Backend, max_tokens: int | None,
                     rows: slice) -> tuple[list[Item], dict[str, int]]:
    """:func:`load_map_items` of the map's ``rows`` (a slice of its row numbers), without its notes."""
    from mia_core import registry

    n = rows.stop - rows.start
    prefixes = prefix_map.read("prefixes", rows)
    suffixes = prefix_map.suffixes(rows)
    ids = [str(v) for v in prefix_map.read("sample_id", rows)]
    labels = [normalize_label(v) for v in prefix_map.read("sample_label", rows)]
    tokenizer = backend.tokenizer
    counts = {"rows": n, "retokenized": 0, "truncated": 0}
    if _same_tokenizer(prefix_map, backend):
        windows = [list(map(int, p)) + list(map(int, s)) for p, s in zip(prefixes, suffixes, strict=True)]
        suffix_lengths = [len(s) for s in suffixes]
    else:
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
        items.append(Item(ids[i], labels[i], window, "", truncated, row=rows.start + i,
                          suffix_length=min(suffix_lengths[i], len(window))))
    texts = tokenizer.decode_batch([it.tokens for it in items]) if items else []
    for item, text in zip(items, texts, strict=True):
        item.text = text
    return items, counts


def map_membership_codes(prefix_map: Any, rows: int) -> np.ndarray:
    """The membership code (``metrics.membership_codes``) of the map's first ``rows`` rows, their labels read
    ``LABEL_ROWS`` at a time."""
    from mia_core.attack.labels import label_codes

    return label_codes((prefix_map.read("sample_label", slice(start, min(rows, start + LABEL_ROWS)))
                        for start in range(0, rows, LABEL_ROWS)), rows)


#: Map rows whose labels are read at a time.
LABEL_ROWS = 1 << 16
#: Strings an attack scores and writes at a time: it holds one block's tokens, texts and scores (some 30 KB a
#: string), never the whole run's.
ATTACK_BLOCK = 4096


class ItemSource:
    """The strings of an attack: every string's membership code (``codes``) before any is scored, then the strings
    a block at a time (:meth:`blocks`, less the positions in ``skip``) and a few of them by position (:meth:`take`:
    ReCaLL's prefix)."""

    codes: np.ndarray
    many_blocks = True  # a bar of its own for the blocks, instead of one for each pass over a block

    def __len__(self) -> int:
        return len(self.codes)

    def blocks(self, skip: frozenset[int] = frozenset()) -> Iterator[list[Item]]:
        raise NotImplementedError

    def take(self, positions: Sequence[int]) -> list[Item]:
        raise NotImplementedError

    def finish(self) -> None:
        """Say what the blocks had to change (truncated windows)."""


class ListSource(ItemSource):
    """Strings already in memory: one block of them all."""

    many_blocks = False

    def __init__(self, items: Sequence[Item]) -> None:
        from mia_core.attack.metrics import membership_codes

        self.items = items
        self.codes = membership_codes([it.label for it in items])

    def blocks(self, skip: frozenset[int] = frozenset()) -> Iterator[list[Item]]:
        yield [it for i, it in enumerate(self.items) if i not in skip]

    def take(self, positions: Sequence[int]) -> list[Item]:
        return [self.items[i] for i in positions]


class MapSource(ItemSource):
    """A prefix map's first ``rows`` windows, ``block`` at a time, as model tokens (:func:`map_window_items`)."""

    def __init__(self, prefix_map: Any, backend: Backend, max_tokens: int | None, rows: int,
                 codes: np.ndarray | None = None, quiet: bool = False, block: int | None = None) -> None:
        self.map, self.backend, self.max_tokens, self.quiet = prefix_map, backend, max_tokens, quiet
        self.block = block or ATTACK_BLOCK
        self.codes = codes if codes is not None else map_membership_codes(prefix_map, rows)
        self.truncated = 0
        if not _same_tokenizer(prefix_map, backend):
            note(_RETOKENIZING.format(prefix_map.tokenizer_name), quiet)

    def blocks(self, skip: frozenset[int] = frozenset()) -> Iterator[list[Item]]:
        self.truncated = 0
        for start in range(0, len(self), self.block):
            items, counts = map_window_items(self.map, self.backend, self.max_tokens,
                                             slice(start, min(len(self), start + self.block)))
            self.truncated += counts["truncated"]
            yield [it for it in items if it.row not in skip]

    def take(self, positions: Sequence[int]) -> list[Item]:
        return [map_window_items(self.map, self.backend, self.max_tokens, slice(i, i + 1))[0][0] for i in positions]

    def finish(self) -> None:
        _note_truncated(self.truncated, self.max_tokens, self.quiet)


def load_dataset_items(samples: Iterable[Sample], backend: Backend, max_tokens: int | None,
                       labels: dict[str, str] | None = None, limit: int | None = None, total: int | None = None,
                       quiet: bool = False) -> tuple[list[Item], dict[str, int]]:
    """Dataset samples tokenized by the model's tokenizer; the first ``max_tokens`` tokens of
    longer samples are kept. Empty samples are skipped and counted."""
    counts = _dataset_counts()
    items = [it for block in dataset_item_blocks(samples, backend, max_tokens, labels, limit, total, quiet, counts)
             for it in block]
    _note_dataset_counts(counts, max_tokens, labels is not None, quiet)
    return items, counts


def _dataset_counts() -> dict[str, int]:
    return {"samples": 0, "empty": 0, "truncated": 0, "unlabelled": 0}


def _note_dataset_counts(counts: dict[str, int], max_tokens: int | None, label_file: bool, quiet: bool) -> None:
    if counts["empty"]:
        note(f"skipped {counts['empty']} empty sample(s)", quiet)
    if counts["truncated"]:
        note(f"{counts['truncated']} sample(s) longer than {max_tokens} tokens (--max-tokens, capped by the model's "
             f"context) were truncated to their first {max_tokens} tokens", quiet)
    if label_file and counts["unlabelled"]:
        note(f"{counts['unlabelled']} sample(s) have no entry in the label file", quiet)


def dataset_item_blocks(samples: Iterable[Sample], backend: Backend, max_tokens: int | None,
                        labels: dict[str, str] | None, limit: int | None, total: int | None, quiet: bool,
                        counts: dict[str, int], block: int | None = None) -> Iterator[list[Item]]:
    """:func:`load_dataset_items` a block of about ``block`` items at a time (``ATTACK_BLOCK``), counting into
    ``counts`` (samples read, empty, truncated, unlabelled), without its notes."""
    tokenizer = backend.tokenizer
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
            counts["unlabelled"] += not label
            truncated = max_tokens is not None and len(ids) > max_tokens
            item = Item(sample.id, label, list(ids[:max_tokens] if truncated else ids), sample.text, truncated)
            if truncated:
                counts["truncated"] += 1
                cut.append(item)
            items.append(item)
        for item, text in zip(cut, tokenizer.decode_batch([it.tokens for it in cut]) if cut else [], strict=True):
            item.text = text  # zlib and the reference see exactly the scored text
        pending.clear()

    size = block or ATTACK_BLOCK
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
            if len(items) >= size:
                yield items
                items = []
        if pending:
            flush()
        if items:
            yield items


class DatasetSource(ItemSource):
    """A dataset's samples (or samples given in memory), read twice: once for every sample's membership code (and
    the notes on what was skipped or cut), then a block at a time to be scored. Neither reading keeps more than a
    block of samples."""

    def __init__(self, samples: Iterable[Sample], backend: Backend, max_tokens: int | None,
                 labels: dict[str, str] | None = None, limit: int | None = None, total: int | None = None,
                 quiet: bool = False, block: int | None = None) -> None:
        from mia_core.attack.metrics import membership_codes

        self.samples, self.backend, self.max_tokens, self.labels = samples, backend, max_tokens, labels
        self.limit, self.total, self.block = limit, total, block
        self.read = _dataset_counts()
        codes = [membership_codes([it.label for it in items]) for items in self._blocks(self.read, quiet)]
        self.codes = np.concatenate(codes) if codes else np.zeros(0, np.int8)
        _note_dataset_counts(self.read, max_tokens, labels is not None, quiet)

    def _blocks(self, counts: dict[str, int], quiet: bool) -> Iterator[list[Item]]:
        return dataset_item_blocks(self.samples, self.backend, self.max_tokens, self.labels, self.limit, self.total,
                                   quiet, counts, self.block)

    def blocks(self, skip: frozenset[int] = frozenset()) -> Iterator[list[Item]]:
        counts, position = _dataset_counts(), 0
        for items in self._blocks(counts, quiet=True):
            kept = [it for i, it in enumerate(items, position) if i not in skip]
            position += len(items)
            yield kept
        if counts != self.read:
            from mia_core.errors import MiaError

            raise MiaError(f"the dataset gave {counts['samples']} samples on its second reading and "
                           f"{self.read['samples']} on its first: mia attack reads a dataset twice (its labels first), "
                           "so it must give the same samples each time it is read")

    def take(self, positions: Sequence[int]) -> list[Item]:
        wanted, found, position = set(positions), {}, 0
        for items in self._blocks(_dataset_counts(), quiet=True):
            found.update({i: it for i, it in enumerate(items, position) if i in wanted})
            position += len(items)
            if len(found) == len(wanted):
                break
        return [found[i] for i in positions]
