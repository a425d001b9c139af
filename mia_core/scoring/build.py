"""``mia index`` sources: a dataset tokenized with a registered tokenizer, or a map's saved dataset.

Both stream documents into the sharded builder (formats/corpus_index/shard_writer.py) with a progress bar counting
tokens; a build interrupted between shards continues with ``resume=True``.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.corpus_index.shard_writer import IndexBuilder
from mia_core.formats.hdf5 import as_strings
from mia_core.formats.prefixmap import PrefixMap
from mia_core.progress import progress

MAP_CHUNK_DOCS = 4096


def _bar(total: int | None, quiet: bool, resumed: int) -> Any:
    desc = f"indexing (skipping {resumed} documents already indexed)" if resumed else "indexing"
    return progress(total, desc, "tok", quiet, unit_scale=True)


def index_prefix_map(out: str | os.PathLike, prefix_map: str | os.PathLike, quiet: bool = False,
                     **options: Any) -> dict[str, Any]:
    """Index the dataset saved inside a prefix map (made with its default --save)."""
    pmap = PrefixMap(prefix_map)
    if not pmap.has_dataset:
        raise MiaError(f"{pmap.folder} holds no saved dataset (made with --no-save): index the dataset "
                       "with --dataset and --model instead")
    vocab = pmap.attrs.get("vocab_size")
    source = {"prefix_map": str(pmap.folder.resolve()), "dataset": pmap.attrs.get("dataset"),
              "dataset_options": pmap.attrs.get("dataset_options")}
    with h5py.File(pmap.path, "r") as f:
        g = f["dataset"]
        offsets = g["offsets"][()]
        tokens = g["tokens"]
        ids = list(as_strings(g["sample_id"][()]))
        if vocab is None:  # maps need not record the vocabulary size: the largest id bounds it
            vocab = int(tokens[()].max()) + 1 if tokens.shape[0] else 1
        builder = IndexBuilder(out, pmap.tokenizer_name, pmap.tokenizer_fingerprint, int(vocab), source,
                               quiet=quiet, **options)
        try:
            n_docs = len(offsets) - 1
            with _bar(int(offsets[-1]) + n_docs, quiet, builder.resumed_documents) as bar:
                for lo in range(0, n_docs, MAP_CHUNK_DOCS):
                    hi = min(lo + MAP_CHUNK_DOCS, n_docs)
                    builder.add_many(tokens[offsets[lo]:offsets[hi]], offsets[lo:hi + 1], ids[lo:hi])
                    bar.update(int(offsets[hi] - offsets[lo]) + hi - lo)
            return builder.finish()
        except BaseException:
            builder.abort()
            raise


def index_dataset(out: str | os.PathLike, model: str, dataset: str, options: dict[str, Any],
                  batch_size: int = 256, quiet: bool = False, tokenizer: Any = None,
                  **build_options: Any) -> dict[str, Any]:
    """Tokenize a registered dataset with ``model``'s tokenizer (or the ``tokenizer`` given) and index it.

    Records are read one by one (a streaming dataset is never held in memory), tokenized in
    batches of ``batch_size`` and handed to the builder, which writes a shard whenever its
    buffer reaches the shard size.
    """
    from mia_core import registry

    if tokenizer is None:
        tokenizer = registry.tokenizers.create(model)
    data = registry.datasets.create(dataset, options)
    source = {"dataset": dataset, "dataset_options": options, "model": model}
    builder = IndexBuilder(out, getattr(tokenizer, "name", model), tokenizer.fingerprint,
                           int(tokenizer.vocab_size), source, quiet=quiet, **build_options)
    try:
        batch: list[str] = []
        batch_ids: list[str] = []
        with _bar(None, quiet, builder.resumed_documents) as bar:
            def flush() -> None:
                skipped = min(builder.skip, len(batch))  # resuming: these documents are indexed already
                for _ in range(skipped):
                    builder.add([], None)
                if len(batch) > skipped:
                    encoded = tokenizer.encode_batch(batch[skipped:])
                    for ids, doc_id in zip(encoded, batch_ids[skipped:], strict=True):
                        bar.update(builder.add(np.asarray(ids), doc_id))
                batch.clear()
                batch_ids.clear()

            for sample in data:
                batch.append(sample.text)
                batch_ids.append(sample.id)
                if len(batch) >= batch_size:
                    flush()
            flush()
        return builder.finish()
    except BaseException:
        builder.abort()
        raise
