"""Turning runs into evidence of memorization (definitions: docs/architecture.md, docs/scoring.md).

- ``matching``: exact / matched-length / Pythia / approximate scores against true suffixes;
- ``index`` and ``build``: tokengrams suffix-array index of a corpus, verbatim-window membership;
- ``goodturing``: Simple Good-Turing, Chao 2014 extrapolation, Good–Toulmin, Chao1;
- ``summary``: ``score_run(path, ...) -> dict`` and ``format_summary(dict) -> str``;
- ``plots`` and ``report``: PNG plots and HTML/Markdown reports.

Heavy libraries (tokengrams, matplotlib, sacrebleu) are imported inside the functions that use them.
"""
