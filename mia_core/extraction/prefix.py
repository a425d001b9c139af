"""Prefix-map generation (``mia prefix``): stream a dataset, tokenize it, cut prefix windows.

Samples are read as a stream, tokenized in batches through ``Tokenizer.encode_batch`` and
written batch by batch (``mia_core.formats.prefixmap.PrefixMapWriter``), so memory stays flat
however large the dataset is, unless the whole dataset is saved into the map.
"""

import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mia_core import registry
from mia_core.defaults import DEFAULT_MODEL
from mia_core.errors import MiaError, UnknownNameError
from mia_core.formats.names import safe_name, timestamp, unused_path
from mia_core.formats.prefixmap import MapNameTaken, PrefixMapWriter
from mia_core.progress import note, progress
from mia_core.text_table import text_table
from mia_core.types import Sample

# A tokenizer batch is cut at whichever limit comes first: large enough for the fast
# tokenizers' parallel batch encoding, small enough to keep memory flat.
BATCH_SAMPLES = 1024
BATCH_CHARS = 4_000_000
MIN_BATCH = 16


def parse_prefix_loc(value: str | int) -> str | int:
    """``"start"`` (the seed's ``"tart"`` too), ``"random"`` or a non-negative token offset."""
    if isinstance(value, bool):
        raise ValueError(f"prefix_loc must be 'start', 'random' or a non-negative integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"prefix_loc must be a non-negative integer, got {value}")
        return int(value)
    text = str(value).strip().lower()
    if text in ("start", "tart"):
        return "start"
    if text == "random":
        return "random"
    if text.isdigit():
        return int(text)
    raise ValueError(f"prefix_loc must be 'start', 'random' or a non-negative integer, got {value!r}")


def map_folder(out: Path, model: str, dataset: str, prefix_tokens: int, prefix_loc: str | int,
               now: datetime | None = None) -> Path:
    """``{model}_{dataset}_{prefix_tokens}_{prefix_loc}_{timestamp}`` under ``out``, never one
    that exists: a second map made within the same second gets ``_2``, ``_3``, ..."""
    return unused_path(out, f"{safe_name(model)}_{safe_name(dataset)}_{prefix_tokens}_{prefix_loc}_{timestamp(now)}")


def _batches(samples: Iterator[Sample], wanted: Callable[[], float]) -> Iterator[list[Sample]]:
    """Batches for the tokenizer; ``wanted()`` (samples still needed) keeps a small ``--size``
    from tokenizing a whole batch of samples it will not use."""
    batch: list[Sample] = []
    chars = 0
    for sample in samples:
        batch.append(sample)
        chars += len(sample.text)
        if len(batch) >= min(BATCH_SAMPLES, max(MIN_BATCH, wanted())) or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


_SURROGATES = re.compile("[\ud800-\udfff]")


def _valid_texts(batch: list[Sample]) -> tuple[list[str], int]:
    """The batch's texts, lone surrogates (from broken JSON escapes, say) replaced by U+FFFD:
    neither tokenizers nor HDF5 accept them. Returns the texts and how many were repaired."""
    texts = [s.text for s in batch]
    bad = 0
    for k, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            texts[k] = _SURROGATES.sub("\ufffd", text)
            bad += 1
    return texts, bad


@contextmanager
def _interruptible() -> Iterator[Callable[[], None]]:
    """Ctrl-C and SIGTERM unwind the run (so the partial folder is removed) and stay noticed.

    Python may deliver a signal's exception inside a ``__del__`` (h5py closes objects there),
    where it is printed and dropped; the signal is also recorded, and the ``check`` this
    yields raises it again at the next batch. Handlers can only be set in the main thread.
    """
    received: list[int] = []

    def stop(signum: int) -> BaseException:
        return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if not _inside_file_io(frame):
            raise stop(signum)
        # Inside h5py, a weakref callback or a __del__: an exception there is dropped (printed as
        # "Exception ignored") or, in HDF5's driver callbacks, can crash HDF5; check() raises it.

    def check() -> None:
        if received:
            raise stop(received[0])

    if threading.current_thread() is not threading.main_thread():
        yield check
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _inside_file_io(frame: Any) -> bool:
    """Whether a signal arrived while h5py (or a finalizer) was running: not a place to raise."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or any(part in code.co_filename for part in ("h5py", "weakref", "safeio")):
            return True
        frame = frame.f_back
    return False


def _window_start(length: int, prefix_tokens: int, suffix_tokens: int, loc: str | int,
                  rng: np.random.Generator) -> int:
    """Token offset of the prefix in a sample of ``length`` tokens (``length >= prefix_tokens``).

    An integer offset is clamped to ``length - prefix_tokens`` (the seed's rule); the suffix
    is then whatever follows, possibly shorter than ``suffix_tokens``. ``random`` draws
    uniformly among the offsets that leave room for a full suffix when the sample has it.
    """
    last = length - prefix_tokens
    if loc == "start":
        return 0
    if loc == "random":
        high = last - suffix_tokens if last >= suffix_tokens else last
        return int(rng.integers(0, high + 1))
    return min(int(loc), last)


def suffix_length_at(length: int, prefix_tokens: int, suffix_tokens: int, loc: str | int) -> int:
    """Length of the true suffix a sample of ``length`` tokens yields (``length >= prefix_tokens``):
    ``start`` and ``random`` (which leaves room for a full suffix when the sample has it) give
    min(length − P, S); an offset, clamped as :func:`_window_start` does, what follows its window."""
    start = 0 if loc in ("start", "random") else min(int(loc), length - prefix_tokens)
    return max(0, min(length - start - prefix_tokens, suffix_tokens))


#: A change of a label's share larger than this, when the rows without a full suffix are left out,
#: is warned about by ``mia prefix`` (docs/prefix.md).
BALANCE_SHIFT = 0.05


def label_shift_warning(rows_by_label: dict[str, dict[str, int]]) -> str | None:
    """One line when leaving out the rows without a full suffix (which scoring does) changes the share
    of a label among the labelled rows by more than ``BALANCE_SHIFT``, else None."""
    labelled = {lab: c for lab, c in rows_by_label.items() if lab != "unlabelled"}
    rows, full = sum(c["rows"] for c in labelled.values()), sum(c["full_suffix"] for c in labelled.values())
    if len(labelled) < 2 or not rows or not full:
        return None
    shifts = {lab: c["full_suffix"] / full - c["rows"] / rows for lab, c in labelled.items()}
    if max(abs(v) for v in shifts.values()) <= BALANCE_SHIFT:
        return None
    # the member share when there are members (two labels: the nonmember share moves by as much)
    label = "member" if "member" in shifts else max(shifts, key=lambda lab: abs(shifts[lab]))
    shift = shifts[label]
    c = labelled[label]
    return (f"rows without a full suffix change the label balance: {label} is {100 * c['rows'] / rows:.1f}% of the "
            f"labelled rows but {100 * c['full_suffix'] / full:.1f}% of those with a full suffix ({shift * 100:+.1f} "
            f"points, more than {BALANCE_SHIFT * 100:g}); scores count only the latter: use --min-suffix-tokens N "
            "and/or --balance")


def eligibility_table(rows_by_label: dict[str, dict[str, int]], suffix_tokens: int) -> str:
    """Per label: rows in the map and rows whose suffix is full (eligible at mia score's default k)."""
    rows = [[lab, str(c["rows"]), str(c["full_suffix"]), str(c["rows"] - c["full_suffix"])]
            for lab, c in sorted(rows_by_label.items())]
    return text_table(["label", "rows", f"full suffix ({suffix_tokens} tokens): eligible", "shorter suffix"], rows)


def balanced_selection(data: Any, tokenizer: Any, prefix_tokens: int, size: int, seed: int,
                       suffix_tokens: int = 0, loc: str | int = "start", if_labelled: bool = False) -> set[int] | None:
    """Stream positions of ``size`` eligible samples drawn at random (seeded), balanced over labels.

    One pass over the dataset finds the eligible labelled samples of each label: at least
    ``prefix_tokens`` tokens and a full suffix (``suffix_tokens``) at the window ``loc`` gives, so
    every row of the map counts in scoring; each label gets ``size // L`` of them (the first
    ``size % L`` labels in sorted order one more), drawn without replacement (a count-matched draw).
    Unlabelled samples are not drawn. With ``if_labelled``, data of fewer than two labels gives None (the
    first ``size`` usable samples are taken instead) rather than a refusal."""
    by_label: dict[str, list[int]] = {}
    position = 0
    for batch in _batches(iter(data), lambda: float("inf")):
        texts, _ = _valid_texts(batch)
        for sample, toks in zip(batch, tokenizer.encode_batch(texts), strict=True):
            if (sample.label and len(toks) >= prefix_tokens
                    and suffix_length_at(len(toks), prefix_tokens, suffix_tokens, loc) >= suffix_tokens):
                by_label.setdefault(str(sample.label), []).append(position)
            position += 1
    labels = sorted(by_label)
    if len(labels) < 2 and if_labelled:
        return None
    if len(labels) < 2:
        found = ", ".join(f"{lab}: {len(by_label[lab])}" for lab in labels) or "no labelled sample"
        raise MiaError(f"--balance needs eligible samples (at least prefix + {suffix_tokens} suffix tokens) of at "
                       f"least two labels; the dataset has {found} (give labels with --dataset-option "
                       "label_field=FIELD)")
    quotas = {lab: size // len(labels) + (i < size % len(labels)) for i, lab in enumerate(labels)}
    short = [lab for lab in labels if len(by_label[lab]) < quotas[lab]]
    if short:
        largest = len(labels) * min(len(v) for v in by_label.values())
        raise MiaError(f"--balance --size {size}: only {len(by_label[short[0]])} eligible {short[0]!r} samples "
                       f"(prefix + {suffix_tokens} suffix tokens; needs {quotas[short[0]]}); the largest balanced "
                       f"size is {largest}")
    rng = np.random.default_rng(seed)
    return {int(p) for lab in labels for p in rng.choice(by_label[lab], size=quotas[lab], replace=False)}


@dataclass(frozen=True)
class MapRequest:
    """What a prefix map is made of (the arguments of :func:`build_prefix_map`)."""

    model: str
    dataset: str
    prefix_tokens: int
    prefix_loc: str | int = "start"
    size: int | None = None
    save: bool = True
    crop: bool = False
    suffix_tokens: int = 50
    seed: int = 0
    out: str | Path = "Prefixes"
    dataset_options: dict | None = None
    quiet: bool = False
    balance: bool | str = False  # "auto": balanced when the data has two labels, else the first `size`
    min_suffix_tokens: int = 0

    def check(self) -> None:
        if self.prefix_tokens <= 0:
            raise ValueError(f"prefix_tokens must be a positive integer, got {self.prefix_tokens}")
        if self.suffix_tokens < 0:
            raise ValueError(f"suffix_tokens must be zero or positive, got {self.suffix_tokens}")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"size must be a positive integer or None (all), got {self.size}")
        if self.balance and self.size is None:
            raise ValueError("balance needs a size (the number of samples to draw)")
        if not 0 <= self.min_suffix_tokens <= self.suffix_tokens:
            raise MiaError(f"--min-suffix-tokens {self.min_suffix_tokens} must be between 0 and --suffix-tokens "
                           f"{self.suffix_tokens}")


def build_prefix_map(model: str, dataset: str, prefix_tokens: int, **options: Any) -> Path:
    """Build a prefix map and return its folder (``options``: the fields of :class:`MapRequest`).

    ``model`` names the tokenizer (``mia models``), ``dataset`` the loader (``mia datasets``).
    ``size`` limits the map to the first ``size`` usable samples (``None``: all). With
    ``save`` the dataset's tokens and texts are stored in the map too: the whole dataset,
    or with ``crop`` only the samples read until the map was full. ``balance`` (with ``size``)
    draws the ``size`` samples at random (``seed``), balanced over labels, among those with a full
    suffix (:func:`balanced_selection`). A sample whose suffix would be shorter than
    ``min_suffix_tokens`` is skipped like a too-short one (counted in ``samples_short_suffix``).
    The map records, per label, its rows and those with a full suffix (``rows_by_label``).
    """
    req = MapRequest(model, dataset, prefix_tokens, **options)
    req.check()
    loc = parse_prefix_loc(req.prefix_loc)
    # Look both names up before loading anything, so a typo fails at once.
    dataset_entry = registry.datasets.get(dataset)
    if registry.tokenizers.find(model) is None and registry.backends.find(model) is not None:
        raise UnknownNameError(
            f"model {model!r} has no tokenizer mia can load (an API model?): make the map with a local "
            f"tokenizer, e.g. --model {DEFAULT_MODEL}; `mia prompt --model {model}` then sends the prefixes as text")
    tokenizer = registry.tokenizers.create(model)
    data = dataset_entry.create(dataset, dict(req.dataset_options or {}))
    selected = (balanced_selection(data, tokenizer, prefix_tokens, req.size, req.seed, req.suffix_tokens, loc,
                                   if_labelled=req.balance == "auto") if req.balance else None)
    if req.balance == "auto" and selected is None:
        note(f"mia prefix: the data has fewer than two labels: the first {req.size} usable samples, not a "
             "balanced draw", req.quiet)
    attrs = _map_attrs(req, loc, tokenizer, dataset_entry, balanced=selected is not None)
    with _interruptible() as check:
        writer = _open_writer(Path(req.out), model, dataset, prefix_tokens, req.suffix_tokens, loc, attrs, req.save)
        cutter = _WindowCutter(req, loc, tokenizer, writer, selected, getattr(data, "length", None))
        try:
            for batch in _batches(iter(data), cutter.wanted):
                check()
                if cutter.add(batch):
                    break  # the map is full: before asking the stream for more
            check()
            return writer.finish(cutter.finish())
        except BaseException:
            cutter.bar.close()
            writer.abort()
            raise


def _map_attrs(req: MapRequest, loc: str | int, tokenizer: Any, dataset_entry: Any, balanced: bool
               ) -> dict[str, Any]:
    """The map's recorded recipe: what the tokenizer, the dataset and the options were."""
    return {
        "model": req.model,
        "tokenizer": tokenizer.name,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "vocab_size": int(tokenizer.vocab_size),
        "dataset": req.dataset,
        "dataset_name": dataset_entry.name,  # canonical (registered) name
        "dataset_plugin": dataset_entry.plugin,
        "dataset_options": dict(req.dataset_options or {}),
        "prefix_loc": str(loc),
        "size_requested": "all" if req.size is None else int(req.size),
        "balance": balanced,
        "min_suffix_tokens": int(req.min_suffix_tokens),
        "seed": int(req.seed),
        "save": bool(req.save),
        "crop": bool(req.crop),
        "pad": -1,
    }


class _WindowCutter:
    """Cuts the prefix window and true suffix of each sample, batch by batch, into the map's writer,
    counting what it skips and why."""

    def __init__(self, req: MapRequest, loc: str | int, tokenizer: Any, writer: PrefixMapWriter,
                 selected: set[int] | None, dataset_length: int | None) -> None:
        self.req, self.loc, self.tokenizer, self.writer, self.selected = req, loc, tokenizer, writer, selected
        self.save_all = req.save and not req.crop  # the seed: without crop the whole dataset is saved
        self.rng = np.random.default_rng(req.seed)
        self.limit = float("inf") if req.size is None else req.size
        self.read = self.used = self.too_short = self.short_suffix = self.repaired = self.dropped_short_suffix = 0
        self.rows_by_label: dict[str, dict[str, int]] = {}
        # The bar counts what decides the end of the run: usable samples when --size stops it.
        self.by_used = req.size is not None and not self.save_all
        total = req.size if self.by_used else dataset_length
        self.bar = progress(total=total, desc="prefix map", unit=" samples", quiet=req.quiet)

    def wanted(self) -> float:
        # Without saving the whole dataset, no need to tokenize past the samples still wanted.
        return float("inf") if self.save_all else 2 * (self.limit - self.used)

    def add(self, batch: list[Sample]) -> bool:
        """Cut one batch of samples; True once the map is full and nothing more is to be read."""
        texts, bad = _valid_texts(batch)
        self.repaired += bad
        token_lists = self.tokenizer.encode_batch(texts)
        if len(token_lists) != len(batch):
            raise MiaError(f"tokenizer {self.tokenizer.name!r} returned {len(token_lists)} encodings "
                           f"for {len(batch)} texts")
        rows: list[tuple[list[int], list[int], int, str, str, int]] = []
        kept = len(batch)
        for j, (sample, toks) in enumerate(zip(batch, token_lists, strict=True)):
            if self.selected is not None and self.read + j not in self.selected:
                continue  # --balance: not drawn
            if self.used >= self.limit:
                if not self.save_all:  # crop: the saved dataset ends where the map is full
                    kept = j
                    break
                continue
            row = self._cut(sample, toks, self.read + j)
            if row is not None:
                rows.append(row)
                self.used += 1
        if rows:
            prefixes, suffixes, index, ids, labels, starts = (list(c) for c in zip(*rows, strict=True))
            self.writer.add_rows(np.asarray(prefixes, dtype=np.int32), suffixes, index, ids, labels, starts)
        if self.req.save:
            self.writer.add_dataset_samples([s.id for s in batch[:kept]], texts[:kept],
                                            [s.label for s in batch[:kept]], token_lists[:kept])
        self.read += kept
        self.bar.update(len(rows) if self.by_used else kept)
        self.bar.set_postfix(used=self.used, refresh=False)
        return self.used >= self.limit and not self.save_all

    def _cut(self, sample: Sample, toks: list[int], index: int) -> tuple[list[int], list[int], int, str, str,
                                                                          int] | None:
        """(prefix, suffix, dataset index, id, label, start) of one sample, or None when it is skipped."""
        req, n = self.req, len(toks)
        if n < req.prefix_tokens:
            self.too_short += 1
            return None
        if suffix_length_at(n, req.prefix_tokens, req.suffix_tokens, self.loc) < req.min_suffix_tokens:
            self.dropped_short_suffix += 1  # --min-suffix-tokens
            return None
        start = _window_start(n, req.prefix_tokens, req.suffix_tokens, self.loc, self.rng)
        end = start + req.prefix_tokens
        suffix = toks[end:end + req.suffix_tokens]
        self.short_suffix += len(suffix) < req.suffix_tokens
        tally = self.rows_by_label.setdefault(sample.label or "unlabelled", {"rows": 0, "full_suffix": 0})
        tally["rows"] += 1
        tally["full_suffix"] += len(suffix) >= req.suffix_tokens
        return toks[start:end], suffix, index, sample.id, sample.label or "", start

    def finish(self) -> dict[str, Any]:
        """The counts the map records; refuses a map with no usable sample."""
        self.bar.close()
        req = self.req
        if self.used == 0:
            raise MiaError(_no_usable_message(req.dataset, self.read, req.prefix_tokens, self.dropped_short_suffix,
                                              req.min_suffix_tokens))
        if self.repaired:
            note(f"mia prefix: {self.repaired} samples held invalid Unicode (lone surrogates), replaced by U+FFFD")
        if req.size is not None and self.used < req.size:
            note(f"mia prefix: only {self.used} usable samples (asked for {req.size})")
        return {"samples_read": self.read, "samples_used": self.used, "samples_skipped": self.too_short,
                "rows_short_suffix": self.short_suffix, "samples_short_suffix": self.dropped_short_suffix,
                "rows_by_label": self.rows_by_label, "samples_repaired": self.repaired,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _open_writer(out: Path, model: str, dataset: str, prefix_tokens: int, suffix_tokens: int, loc: str | int,
                 attrs: dict[str, Any], save: bool) -> PrefixMapWriter:
    for _ in range(100):  # a name taken between the check and the claim: take the next one
        try:
            return PrefixMapWriter(map_folder(out, model, dataset, prefix_tokens, loc), prefix_tokens,
                                   suffix_tokens, attrs, save_dataset=save)
        except MapNameTaken:
            continue
    raise MiaError(f"could not claim a new map folder under {out}")


def _no_usable_message(dataset: str, read: int, prefix_tokens: int, dropped: int = 0, min_suffix: int = 0) -> str:
    if read == 0:
        return f"dataset {dataset!r} yielded no samples: no prefix map written"
    if dropped:
        return (f"no usable sample in dataset {dataset!r}: of {read} samples read, {dropped} have a suffix shorter "
                f"than --min-suffix-tokens {min_suffix} and the rest fewer than prefix_tokens={prefix_tokens} "
                "tokens; no prefix map written")
    return (f"no usable sample in dataset {dataset!r}: all {read} samples read are shorter than "
            f"prefix_tokens={prefix_tokens} tokens; no prefix map written")
