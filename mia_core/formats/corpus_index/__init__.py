"""The corpus index (docs/index.md): ``reader`` (``CorpusIndex``, the folder layout), ``shard_writer``
(building it shard by shard), ``suffix_sort``/``suffix_search`` (suffix tables), ``window_table``
(fixed-window fingerprints) and ``infinigram`` (reading an infini-gram index in place)."""
