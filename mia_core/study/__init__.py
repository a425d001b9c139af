"""`mia study`: the whole pipeline in one resumable folder (docs/study.md)."""
