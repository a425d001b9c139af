"""The report's sections as HTML (images embedded as base64) or Markdown (images as links), through the
jinja2 templates in ``templates/``: a page template per format and one template per part of a section."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import jinja2

from mia_core import __version__
from mia_core.report.sections import Section

TITLE = "mia memorization report"


@cache
def _environment(markdown: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("mia_core.report", "templates"),
                             autoescape=not markdown, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["base64"] = lambda path: base64.b64encode(Path(path).read_bytes()).decode()
    # a Markdown table cell holds one line and no unescaped column separator
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return env


def _subtitle() -> str:
    return f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by mia {__version__}."


def render_html(sections: list[Section]) -> str:
    """One self-contained HTML page."""
    page = _environment(False).get_template("page.html.j2")
    return page.render(title=TITLE, subtitle=_subtitle(), sections=sections)


def render_markdown(sections: list[Section], out: Path) -> str:
    """Markdown whose images are links relative to the report file ``out``."""
    env = _environment(True)
    page = env.get_template("page.md.j2")
    relative = {"relative_link": lambda path: Path(path).relative_to(out.parent).as_posix()}
    return page.render(title=TITLE, subtitle=_subtitle(), sections=sections, **relative)
