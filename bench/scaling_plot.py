"""bench/results/near_dedup_scaling.svg: docs/s against corpus size for each tool, drawn from
the bench/results/minhash_vs_datatrove_<N>k.json files (plain SVG: no plotting dependency).

Each point is labelled with the commit of its results file, since sizes may come from
different runs (a file written by the older method, server start not timed, is drawn as its own series).

    python bench/scaling_plot.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS  # noqa: E402

SERIES = {  # results key -> (label, colour)
    "refinery_cold": ("refinery run (cold: server start included)", "#1b7837"),
    # files written before the clock covered `refinery run` (server started outside it)
    "refinery": ("refinery, older method (server start not timed)", "#a6611a"),
    "refinery_warm": ("refinery run (server already up)", "#7fbf7b"),
    "datatrove_whitespace": ("datatrove, whitespace tokenizer (like for like)", "#2166ac"),
    "datatrove_default": ("datatrove, default spaCy tokenizer", "#b2182b"),
}
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 420, 70, 330, 30, 50


def points() -> dict[str, list[tuple[int, int, str]]]:
    out: dict[str, list[tuple[int, int, str]]] = {k: [] for k in SERIES}
    for path in sorted(RESULTS.glob("minhash_vs_datatrove_*k.json")):
        data = json.loads(path.read_text())
        docs = data["corpus"]["docs"]
        stamp = data["commit"][:7] if data.get("commit") else "no commit (older method)"
        for key, row in data["results"].items():
            if key in out:
                out[key].append((docs, row["docs_per_s"], stamp))
    return {k: sorted(v) for k, v in out.items() if v}


def draw(series: dict[str, list[tuple[int, int, str]]]) -> str:
    xs = [p[0] for v in series.values() for p in v]
    ys = [p[1] for v in series.values() for p in v]
    x0, x1 = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)

    def px(x: float) -> float:
        return LEFT + (math.log10(x) - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def py(y: float) -> float:
        return H - BOTTOM - (math.log10(y) - y0) / (y1 - y0) * (H - TOP - BOTTOM)

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="11"><rect width="{W}" height="{H}" fill="white"/>']
    for e in range(x0, x1 + 1):
        svg.append(f'<line x1="{px(10**e):.1f}" y1="{TOP}" x2="{px(10**e):.1f}" y2="{H - BOTTOM}" stroke="#ddd"/>'
                   f'<text x="{px(10**e):.1f}" y="{H - BOTTOM + 15}" text-anchor="middle">{10**e:,}</text>')
    for e in range(y0, y1 + 1):
        svg.append(f'<line x1="{LEFT}" y1="{py(10**e):.1f}" x2="{W - RIGHT}" y2="{py(10**e):.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 6}" y="{py(10**e) + 4:.1f}" text-anchor="end">{10**e:,}</text>')
    svg.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">corpus size (documents)</text>'
               f'<text x="16" y="{(TOP + H - BOTTOM) / 2}" transform="rotate(-90 16 {(TOP + H - BOTTOM) / 2})" '
               f'text-anchor="middle">docs/s, end to end (2 cores)</text>')
    for i, (key, pts) in enumerate(series.items()):
        label, colour = SERIES[key]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y, stamp in pts:
            svg.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}">'
                       f'<title>{label}: {x:,} docs, {y:,} docs/s ({stamp})</title></circle>')
        ly = TOP + 10 + 18 * i
        svg.append(f'<line x1="{W - RIGHT + 15}" y1="{ly}" x2="{W - RIGHT + 35}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2"/><text x="{W - RIGHT + 40}" y="{ly + 4}">{label}</text>')
    stamps = sorted({f"{x:,}: {s}" for v in series.values() for x, _, s in v})
    for j, s in enumerate(stamps):
        svg.append(f'<text x="{W - RIGHT + 15}" y="{TOP + 100 + 15 * j}" fill="#555">commit at {s}</text>')
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def main() -> Path:
    series = points()
    if not series:
        raise SystemExit(f"no {RESULTS}/minhash_vs_datatrove_*k.json to draw")
    out = RESULTS / "near_dedup_scaling.svg"
    out.write_text(draw(series))
    print(f"picture: {out}")
    return out


if __name__ == "__main__":
    main()
