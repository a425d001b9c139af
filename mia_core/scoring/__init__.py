"""Turning runs into evidence of memorization (definitions: docs/architecture.md, docs/scoring.md).

- ``matching``: exact / matched-length / Pythia / approximate scores against true suffixes;
- ``build``: builds a corpus index (``mia_core.formats.corpus_index``) from a dataset or a map's saved dataset;
- ``goodturing``: Simple Good-Turing, Chao 2014 extrapolation, Good–Toulmin, Chao1;
- ``summary``: ``score_run(path, ...) -> dict`` and ``format_summary(dict) -> str``;
- ``plots`` and ``report``: PNG plots and HTML/Markdown reports.

Heavy libraries (tokengrams, matplotlib, sacrebleu) are imported inside the functions that use them.
"""
