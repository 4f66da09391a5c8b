"""The release report: ``dashboards/report.html.j2`` rendered from the manifest alone, so
every number shown is the manifest's. Charts are inline SVG: the page needs no network and
no script."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

TEMPLATE_DIRS = [
    Path(__file__).resolve().parent.parent / "dashboards",  # source checkout / editable install
    Path(__file__).resolve().parent / "templates",
]


def bar_chart(chart_id: str, labels: list[str], values: list[float], unit: str = "") -> Markup:
    """A horizontal bar chart; each bar carries its exact value as text and in ``data-value``."""
    row, label_w, bar_w = 22, 230, 420
    top = max(values, default=0) or 1
    height = row * max(len(values), 1) + 8
    parts = [f'<svg id="{chart_id}" class="chart" role="img" width="{label_w + bar_w + 110}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 4 + i * row
        w = max(1.0, bar_w * value / top) if value else 0
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="lbl">{escape(str(label))}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" class="bar" '
            f'data-label="{escape(str(label))}" data-value="{value}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="val">{value:,}{unit}</text>'
        )
    if not values:
        parts.append('<text x="10" y="18" class="lbl">nothing to show</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def s_curve_chart(chart_id: str, bands: int, rows: int, points: dict[str, float]) -> Markup:
    """Probability of becoming a candidate against Jaccard, with the manifest's marked points."""
    w, h, pad = 420, 220, 34
    xs = [i / 100 for i in range(101)]
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{pad + x * (w - 2 * pad):.1f},{h - pad - (1 - (1 - x**rows) ** bands) * (h - 2 * pad):.1f}"
        for i, x in enumerate(xs))
    marks = "".join(
        f'<circle cx="{pad + float(j) * (w - 2 * pad):.1f}" cy="{h - pad - p * (h - 2 * pad):.1f}" r="4" '
        f'class="mark" data-j="{j}" data-value="{p}"><title>J={j}: {p}</title></circle>'
        f'<text x="{pad + float(j) * (w - 2 * pad) + 6:.1f}" y="{h - pad - p * (h - 2 * pad) + 14:.1f}" '
        f'class="val">{j}: {p:.3f}</text>'
        for j, p in points.items())
    return Markup(
        f'<svg id="{chart_id}" class="chart" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" class="axis"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" class="axis"/>'
        f'<text x="{w / 2}" y="{h - 6}" class="lbl" text-anchor="middle">Jaccard</text>'
        f'<text x="8" y="{pad - 10}" class="lbl">P(candidate)</text>'
        f'<path d="{path}" class="curve"/>{marks}</svg>')


def histogram_chart(chart_id: str, edges: list[float], counts: list[int], marks: dict[str, float]) -> Markup:
    """Vertical bars over [edges[0], edges[-1]], with a dashed line at each marked value (the
    thresholds the stage used)."""
    w, h, pad = 460, 200, 34
    lo, hi = edges[0], edges[-1]
    top = max(counts, default=0) or 1
    bw = (w - 2 * pad) / max(len(counts), 1)
    parts = [f'<svg id="{chart_id}" class="chart" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" class="axis"/>']
    for i, c in enumerate(counts):
        bh = (h - 2 * pad) * c / top
        parts.append(f'<rect x="{pad + i * bw + 1:.1f}" y="{h - pad - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
                     f'class="bar" data-label="{edges[i]}-{edges[i + 1]}" data-value="{c}">'
                     f'<title>{edges[i]}-{edges[i + 1]}: {c:,}</title></rect>')
    for label, value in marks.items():
        x = pad + (min(max(value, lo), hi) - lo) / ((hi - lo) or 1) * (w - 2 * pad)
        parts.append(f'<line x1="{x:.1f}" y1="{pad - 8}" x2="{x:.1f}" y2="{h - pad}" class="mark-line" '
                     f'data-label="{escape(label)}" data-value="{value}"/>'
                     f'<text x="{x + 4:.1f}" y="{pad - 10}" class="val">{escape(label)} {value:.3g}</text>')
    parts.append(f'<text x="{pad}" y="{h - 12}" class="lbl">{lo}</text>'
                 f'<text x="{w - pad}" y="{h - 12}" class="lbl" text-anchor="end">{hi}</text></svg>')
    return Markup("".join(parts))


def quality_marks(m: dict[str, Any], attribute: str) -> dict[str, float]:
    """The cut-offs drawn on an attribute's histogram: its thresholds and its taggers' rules."""
    q, cfg = m["quality"], m["config"].get("quality", {})
    marks = {t["name"]: t["value"] for t in q["thresholds"] if t["attribute"] == attribute and t["value"] is not None}
    if attribute == "quality__lid__score" and "language" in q["rules"]:
        marks["language"] = cfg["language_id"]["min_score"]
    if attribute == "quality__classifier__score" and cfg.get("classifier", {}).get("min_score") is not None:
        marks["classifier"] = cfg["classifier"]["min_score"]
    if attribute == "quality__combined__score" and cfg.get("combined", {}).get("min_score") is not None:
        marks["combined"] = cfg["combined"]["min_score"]
    return marks


def diff_html(before: str, after: str, context: int = 1, limit: int = 80) -> Markup:
    """A line diff: removed lines in <del>, added ones in <ins>, a line of context around."""
    import difflib

    out = []
    for line in list(difflib.unified_diff(before.split("\n"), after.split("\n"), lineterm="", n=context))[2:limit]:
        body = escape(line[1:])
        if line.startswith("-"):
            out.append(f"<del>{body}</del>")
        elif line.startswith("+"):
            out.append(f"<ins>{body}</ins>")
        elif line.startswith("@@"):
            out.append('<span class="hunk">…</span>')
        else:
            out.append(f"<span>{body}</span>")
    return Markup("\n".join(out))


def charts(m: dict[str, Any]) -> dict[str, Markup]:
    out = {
        "funnel": bar_chart("chart-funnel", [st["stage"] for st in m["funnel"]],
                            [st["docs_out"] for st in m["funnel"]]),
        "drops": bar_chart("chart-drops", [f"{st['stage']}: {r}" for st in m["funnel"] for r in st["dropped"]],
                           [n for st in m["funnel"] for n in st["dropped"].values()]),
    }
    bins = m["length_bins"]
    labels = [f"{lo:,}-{hi - 1:,} words" for lo, hi in zip(bins, bins[1:], strict=False)] + [f"{bins[-1]:,}+ words"]
    total = [sum(s["length_histogram"][i] for s in m["sources"].values()) for i in range(len(bins))]
    out["lengths"] = bar_chart("chart-lengths", labels, total)
    near = m.get("dedup", {}).get("near")
    if near:
        sizes = near["cluster_sizes"]
        out["clusters"] = bar_chart("chart-clusters", [f"size {k}" for k in sizes], list(sizes.values()))
        out["scurve"] = s_curve_chart("chart-scurve", near["parameters"]["bands"], near["parameters"]["rows"],
                                      near["s_curve"])
    if m.get("leaner"):
        lean = m["leaner"]
        out["leaner_rejected"] = bar_chart("chart-leaner-rejected", ["accepted", *lean["rejected"]],
                                           [lean["accepted"], *lean["rejected"].values()])
    if m.get("quality"):
        q = m["quality"]
        out["quality_rules"] = bar_chart("chart-quality-rules", list(q["rules"]), list(q["rules"].values()))
        for name, hist in q["histograms"].items():
            out[f"hist:{name}"] = histogram_chart(f"chart-hist-{name}", hist["bins"], hist["counts"],
                                                  quality_marks(m, name))
    return out


def render_report(manifest: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in TEMPLATE_DIRS]),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    diffs = [diff_html(x["before"], x["after"]) for x in manifest.get("samples", [])]
    return env.get_template("report.html.j2").render(m=manifest, charts=charts(manifest), diffs=diffs)
