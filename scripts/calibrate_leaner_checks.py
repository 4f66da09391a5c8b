"""Calibrate and measure the leaner validator's content checks (topic, fidelity, fluency) on
the upstream TinyHelen pairs of ../shared/data/tinyhelen_leaner_sample.

The pairs are split in two fixed halves by the parity of the original's SHA-256
(``tests.corpora.split_of``). On the calibration half, each check's floor is the given
quantile of the scores of the reference rewrites that pass every earlier check (so the
budget is not spent on rewrites the length, coverage or language checks already reject).
The held-out half then reports what the whole validator, with those floors, accepts of the
reference rewrites and rejects of each corruption (``tests.corpora.corrupted``); corruptions
are built within each half. The floors in ``tasks/config.py`` (LeanerConfig) are the ones
printed here, rounded down; they apply with ``content_check: floors`` (the default, a learned
decision, comes from scripts/train_leaner_content_model.py).

    python scripts/calibrate_leaner_checks.py [--quantile 0.01]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHECKS = (("topic", "min_topic"), ("fidelity", "min_fidelity"), ("reach", "min_reach"), ("fluency", "min_fluency"))


def main() -> None:
    import dataclasses

    import numpy as np

    from tasks.config import LeanerConfig
    from tasks.leaner.stage import limits_for
    from tasks.leaner.validate import validate
    from tasks.quality import lid
    from tests.corpora import CORRUPTIONS, corrupted, split_of, tinyhelen_pairs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quantile", type=float, default=0.01)
    ap.add_argument("--json", type=Path, help="write the table here too")
    ap.add_argument("--shipped", action="store_true",
                    help="measure the floors configured in LeanerConfig instead of choosing new ones")
    args = ap.parse_args()
    cfg = LeanerConfig(enabled=True, content_check="floors")  # the floors keep the fixed length band
    pairs = tinyhelen_pairs()
    halves = {name: [p for p in pairs if split_of(p["original"]) == name] for name in ("calibration", "heldout")}

    def off(genre: str):
        return dataclasses.replace(limits_for(cfg, genre), min_topic=None, min_fidelity=None, min_reach=None,
                                   min_fluency=None, content_model=False)

    # scores of every check, with the content floors off: the earlier checks' verdicts stay valid
    t0 = time.perf_counter()
    scored: dict[str, list[dict]] = {}
    n_validated = 0
    for name, ps in halves.items():
        rows = []
        for p, bad in zip(ps, corrupted(ps), strict=True):
            row = {"genre": p["genre"]}
            for kind, text in [("reference", p["rewrite"]), *bad.items()]:
                v = validate(p["original"], text, p["genre"], off(p["genre"]), lid.predict)
                n_validated += 1
                row[kind] = {"base_reason": v.reason, "topic": v.topic, "fidelity": v.fidelity, "reach": v.reach,
                             "fluency": v.fluency}
            rows.append(row)
        scored[name] = rows
    per_doc = (time.perf_counter() - t0) / n_validated

    floors: dict[str, float] = {}
    base_ok = [r["reference"] for r in scored["calibration"] if r["reference"]["base_reason"] is None]
    for score, field in CHECKS:
        shipped = getattr(cfg, field)
        floors[field] = float(shipped if args.shipped else np.quantile([r[score] for r in base_ok], args.quantile))
        base_ok = [r for r in base_ok if r[score] >= floors[field]]

    def reason(r: dict) -> str | None:
        if r["base_reason"] is not None:
            return r["base_reason"]
        for score, field in CHECKS:
            if r[score] < floors[field]:
                return "fidelity" if score == "reach" else score
        return None

    table = {"floors": {k: round(v, 4) for k, v in floors.items()}, "quantile": args.quantile,
             "seconds_per_validation": round(per_doc, 5)}
    for name, rows in scored.items():
        genres = sorted({r["genre"] for r in rows})
        out = {}
        for kind in ("reference", *CORRUPTIONS):
            reasons = [reason(r[kind]) for r in rows]
            rate = (sum(x is None for x in reasons) if kind == "reference" else sum(x is not None for x in reasons))
            by_genre = {g: round(sum((reason(r[kind]) is None) == (kind == "reference") for r in rows
                                     if r["genre"] == g) / sum(r["genre"] == g for r in rows), 3) for g in genres}
            out[kind] = {"rate": round(rate / len(rows), 4), "n": len(rows), "by_genre": by_genre,
                         "reasons": dict(Counter(x for x in reasons if x is not None).most_common())}
        table[name] = out
    print(json.dumps(table, indent=1))
    for name in ("calibration", "heldout"):
        print(f"\n{name}: accepted references {table[name]['reference']['rate']:.1%}; rejected " +
              ", ".join(f"{k} {table[name][k]['rate']:.1%}" for k in CORRUPTIONS))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
