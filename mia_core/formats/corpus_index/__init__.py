"""The corpus index (docs/index.md): ``layout`` (file names, storage), ``reader`` (``CorpusIndex``), ``shard_writer``
(building it shard by shard), ``suffix_sort``/``suffix_search`` (suffix tables), ``window_table``
(fixed-window fingerprints) and ``infinigram`` (reading an infini-gram index in place)."""
