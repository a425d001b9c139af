"""Inspection: `mia export` records and `mia show` descriptions of the files mia writes
(docs/report.md)."""
