"""The release report: ``dashboards/report.html.j2`` rendered from the manifest alone, so
every number shown is the manifest's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIRS = [
    Path(__file__).resolve().parent.parent / "dashboards",  # source checkout / editable install
    Path(__file__).resolve().parent / "templates",
]


def render_report(manifest: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in TEMPLATE_DIRS]),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(m=manifest)
