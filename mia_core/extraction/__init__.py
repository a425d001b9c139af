"""Extraction: dataset -> prefix map -> runs (generation, the teacher-forced check, the divergence
attack), sharded and merged (docs/architecture.md)."""
