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
                       suffix_tokens: int = 0, loc: str | int = "start") -> set[int]:
    """Stream positions of ``size`` eligible samples drawn at random (seeded), balanced over labels.

    One pass over the dataset finds the eligible labelled samples of each label: at least
    ``prefix_tokens`` tokens and a full suffix (``suffix_tokens``) at the window ``loc`` gives, so
    every row of the map counts in scoring; each label gets ``size // L`` of them (the first
    ``size % L`` labels in sorted order one more), drawn without replacement (a count-matched draw).
    Unlabelled samples are not drawn."""
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


def build_prefix_map(model: str, dataset: str, prefix_tokens: int, prefix_loc: str | int = "start",
                     size: int | None = None, save: bool = True, crop: bool = False, suffix_tokens: int = 50,
                     seed: int = 0, out: str | Path = "Prefixes", dataset_options: dict | None = None,
                     quiet: bool = False, balance: bool = False, min_suffix_tokens: int = 0) -> Path:
    """Build a prefix map and return its folder.

    ``model`` names the tokenizer (``mia models``), ``dataset`` the loader (``mia datasets``).
    ``size`` limits the map to the first ``size`` usable samples (``None``: all). With
    ``save`` the dataset's tokens and texts are stored in the map too: the whole dataset,
    or with ``crop`` only the samples read until the map was full. ``balance`` (with ``size``)
    draws the ``size`` samples at random (``seed``), balanced over labels, among those with a full
    suffix (:func:`balanced_selection`). A sample whose suffix would be shorter than
    ``min_suffix_tokens`` is skipped like a too-short one (counted in ``samples_short_suffix``).
    The map records, per label, its rows and those with a full suffix (``rows_by_label``).
    """
    if prefix_tokens <= 0:
        raise ValueError(f"prefix_tokens must be a positive integer, got {prefix_tokens}")
    if suffix_tokens < 0:
        raise ValueError(f"suffix_tokens must be zero or positive, got {suffix_tokens}")
    if size is not None and size <= 0:
        raise ValueError(f"size must be a positive integer or None (all), got {size}")
    if balance and size is None:
        raise ValueError("balance needs a size (the number of samples to draw)")
    if not 0 <= min_suffix_tokens <= suffix_tokens:
        raise MiaError(f"--min-suffix-tokens {min_suffix_tokens} must be between 0 and --suffix-tokens "
                       f"{suffix_tokens}")
    loc = parse_prefix_loc(prefix_loc)
    options = dict(dataset_options or {})

    # Look both names up before loading anything, so a typo fails at once.
    dataset_entry = registry.datasets.get(dataset)
    if registry.tokenizers.find(model) is None and registry.backends.find(model) is not None:
        raise UnknownNameError(
            f"model {model!r} has no tokenizer mia can load (an API model?): make the map with a local "
            f"tokenizer, e.g. --model {DEFAULT_MODEL}; `mia prompt --model {model}` then sends the prefixes as text")
    tokenizer = registry.tokenizers.create(model)
    data = dataset_entry.create(dataset, options)

    attrs: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer.name,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "vocab_size": int(tokenizer.vocab_size),
        "dataset": dataset,
        "dataset_name": dataset_entry.name,  # canonical (registered) name
        "dataset_plugin": dataset_entry.plugin,
        "dataset_options": options,
        "prefix_loc": str(loc),
        "size_requested": "all" if size is None else int(size),
        "balance": bool(balance),
        "min_suffix_tokens": int(min_suffix_tokens),
        "seed": int(seed),
        "save": bool(save),
        "crop": bool(crop),
        "pad": -1,
    }
    save_all = save and not crop  # the seed: without crop the whole dataset is saved
    selected = balanced_selection(data, tokenizer, prefix_tokens, size, seed, suffix_tokens, loc) if balance else None
    with _interruptible() as check:
        rng = np.random.default_rng(seed)
        read = used = too_short = short_suffix = repaired = dropped_short_suffix = 0
        rows_by_label: dict[str, dict[str, int]] = {}
        length = getattr(data, "length", None)
        # The bar counts what decides the end of the run: usable samples when --size stops it.
        by_used = size is not None and not save_all
        total = size if by_used else length
        limit = float("inf") if size is None else size
        bar = progress(total=total, desc="prefix map", unit=" samples", quiet=quiet)
        writer = _open_writer(Path(out), model, dataset, prefix_tokens, suffix_tokens, loc, attrs, save)
        try:
            # Without saving the whole dataset, no need to tokenize past the samples still wanted.
            wanted = (lambda: float("inf")) if save_all else (lambda: 2 * (limit - used))
            for batch in _batches(iter(data), wanted):
                check()
                texts, bad = _valid_texts(batch)
                repaired += bad
                token_lists = tokenizer.encode_batch(texts)
                if len(token_lists) != len(batch):
                    raise MiaError(f"tokenizer {tokenizer.name!r} returned {len(token_lists)} encodings "
                                   f"for {len(batch)} texts")
                rows_p: list[list[int]] = []
                rows_s: list[list[int]] = []
                index: list[int] = []
                ids: list[str] = []
                labels: list[str] = []
                starts: list[int] = []
                kept = len(batch)
                for j, (sample, toks) in enumerate(zip(batch, token_lists, strict=True)):
                    if selected is not None and read + j not in selected:
                        continue  # --balance: not drawn
                    if used >= limit:
                        if not save_all:  # crop: the saved dataset ends where the map is full
                            kept = j
                            break
                        continue
                    n = len(toks)
                    if n < prefix_tokens:
                        too_short += 1
                        continue
                    if suffix_length_at(n, prefix_tokens, suffix_tokens, loc) < min_suffix_tokens:
                        dropped_short_suffix += 1  # --min-suffix-tokens
                        continue
                    start = _window_start(n, prefix_tokens, suffix_tokens, loc, rng)
                    end = start + prefix_tokens
                    rows_p.append(toks[start:end])
                    suffix = toks[end:end + suffix_tokens]
                    short_suffix += len(suffix) < suffix_tokens
                    tally = rows_by_label.setdefault(sample.label or "unlabelled", {"rows": 0, "full_suffix": 0})
                    tally["rows"] += 1
                    tally["full_suffix"] += len(suffix) >= suffix_tokens
                    rows_s.append(suffix)
                    index.append(read + j)
                    ids.append(sample.id)
                    labels.append(sample.label or "")
                    starts.append(start)
                    used += 1
                if rows_p:
                    writer.add_rows(np.asarray(rows_p, dtype=np.int32), rows_s, index, ids, labels, starts)
                if save:
                    writer.add_dataset_samples([s.id for s in batch[:kept]], texts[:kept],
                                               [s.label for s in batch[:kept]], token_lists[:kept])
                read += kept
                bar.update(len(rows_p) if by_used else kept)
                bar.set_postfix(used=used, refresh=False)
                if used >= limit and not save_all:
                    break  # before asking the stream for more
            check()
            bar.close()
            counts = {"samples_read": read, "samples_used": used, "samples_skipped": too_short,
                      "rows_short_suffix": short_suffix, "samples_short_suffix": dropped_short_suffix,
                      "rows_by_label": rows_by_label, "samples_repaired": repaired,
                      "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            if used == 0:
                raise MiaError(_no_usable_message(dataset, read, prefix_tokens, dropped_short_suffix,
                                                  min_suffix_tokens))
            if repaired:
                note(f"mia prefix: {repaired} samples held invalid Unicode (lone surrogates), replaced by U+FFFD")
            if size is not None and used < size:
                note(f"mia prefix: only {used} usable samples (asked for {size})")
            return writer.finish(counts)
        except BaseException:
            bar.close()
            writer.abort()
            raise


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
