"""``mia report``: the report of runs, attacks and set-level tests, above every pipeline step."""

from mia_core.report.build import write_report

__all__ = ["write_report"]
