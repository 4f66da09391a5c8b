"""Both engines side by side on the same documents: every attribute compared, document by document.

Used by the tests (shared corpora, generated text, a sample of the standard corpus) and by
``bench/quality_vs_datatrove.py`` (the whole standard corpus).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tasks.quality import heuristics


def default_specs(c4_modify: bool = True) -> list[heuristics.TaggerSpec]:
    """The four filters with datatrove's defaults, in FineWeb's order; C4 as a modifier, so that
    FineWeb sees the text C4 leaves and the modified text is compared too."""
    return [heuristics.TaggerSpec(n, {}, modify=(n == "c4_quality" and c4_modify)) for n in heuristics.TAGGERS]


@dataclass
class Comparison:
    documents: int
    fallbacks: int
    fast_cpu_s: float
    datatrove_cpu_s: float
    differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fallback_share(self) -> float:
        return self.fallbacks / self.documents if self.documents else 0.0

    def describe(self, limit: int = 20) -> str:
        return "\n".join(f"doc {d['id']}: {d['attribute']}: fast={d['fast']!r} datatrove={d['datatrove']!r}"
                         for d in self.differences[:limit])


def compare(texts: list[str], ids: list[str], specs: list[heuristics.TaggerSpec] | None = None,
            short_circuit: bool = False) -> Comparison:
    """Run both engines over ``texts``; every attribute and the modified text must agree."""
    specs = specs or default_specs()
    t0 = time.process_time()
    fast = heuristics.tag_all(specs, list(texts), list(ids), short_circuit, engine="fast")
    t1 = time.process_time()
    ref = heuristics.tag_all(specs, list(texts), list(ids), short_circuit, engine="datatrove")
    t2 = time.process_time()
    out = Comparison(len(texts), fast.fallbacks, t1 - t0, t2 - t1)
    for name, col in ref.columns.items():
        a, b = fast.columns[name].to_pylist(), col.to_pylist()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                out.differences.append({"id": ids[i], "attribute": name, "fast": x, "datatrove": y})
    if (fast.new_text is None) != (ref.new_text is None):
        out.differences.append({"id": "*", "attribute": "new_text", "fast": fast.new_text is None,
                                "datatrove": ref.new_text is None})
    elif ref.new_text is not None and fast.new_text is not None:
        for i, (x, y) in enumerate(zip(fast.new_text, ref.new_text, strict=True)):
            if x != y:
                out.differences.append({"id": ids[i], "attribute": "new_text", "fast": x[:200], "datatrove": y[:200]})
    return out
