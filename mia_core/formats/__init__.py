"""The files mia reads and writes, and the helpers every format shares (docs/architecture.md, "Formats").

- ``prefixmap``: ``prefix_map.h5`` (``mia prefix``);
- ``runs`` and ``journal``: run files and their crash-safe journal (``mia prompt``, ``mia check``);
- ``scores``: ``<run>.scores.h5`` (``mia score``);
- ``attack_results``: ``<map>/attacks/*.h5`` and their CSV/JSONL export (``mia attack``);
- ``corpus_index``: the sharded corpus index, its builder and its queries (``mia index``);
- ``filekinds``: which of these a path is; ``provenance``: what made a file (every format records it);
- shared helpers: ``safeio`` (the one atomic write, fsync, disk errors), ``hdf5`` (attributes and
  strings as h5py stores them), ``names`` (timestamps, safe names, never-overwrite paths).

Nothing here imports a pipeline step or click: steps and the CLI import formats, never the reverse.
"""
