"""EXPERIMENT (issue 17, session 14, the positional blind spot): does a trained sentence
embedding, added to the lemma chain's evidence, make a rewrite whose first half or middle
third is another document's text fail while TinyHelen's paraphrasing references pass?

Five earlier experiments (docs/leaner.md) found that lemma evidence cannot tell a paraphrase
from a replaced part, and named a sentence encoder as the next evidence; none was thought to
be available offline. PyPI's ``wordllama`` (MIT) ships its 256-dimension ``l2_supercat``
model (a static token-embedding table trained contrastively on sentence pairs, 16 MB) and its
tokenizer inside the wheel, so it runs here without a hub. Its loader looks for the tokenizer
under a folder name the wheel does not use and then tries to download it, so the files are
opened directly (``load_vectors``).

Evidence (``vector_features``): each text's token vectors are cut into ``CHUNKS`` equal runs
of tokens and summed per window of ``SPAN`` consecutive runs (a third of the text, wherever
it starts: the measure does not know where a corruption was put). For the rewrite: the
cosine of the whole texts, the worst window's cosine with the whole original, the worst
window's cosine with the rest of the rewrite (a replaced stretch is about something else
than the text around it, whatever the original says), and the worst sum of the two; for the
original, the worst window's cosine with the whole rewrite (a part the rewrite dropped).

Procedure: the positional experiment's features and training negatives
(scripts/experiment_leaner_positional.py: the shipped features, the chain's position-free
measures, the first half, middle third and a random run replaced) with these features added,
through the first-half experiment's variants and its quick check and the training script's
nested cross-validation (scripts/experiment_leaner_first_half.py and
scripts/train_leaner_content_model.py, unchanged). Targets: the issue's (references >= 93%,
each corruption >= 95%) and a replaced first half >= 95%; with ``--middle-binding`` the
middle third >= 95% too.

    python scripts/experiment_leaner_sentence_vectors.py [--auc] [--content-only] [--quick]
        [--nested auto|VARIANT] [--pages] [--middle-binding] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scripts.experiment_leaner_first_half as F  # noqa: E402
import scripts.experiment_leaner_positional as P  # noqa: E402
import scripts.train_leaner_content_model as T  # noqa: E402

CHUNKS, SPAN = 9, 3
VECTOR = ("vec_whole", "vec_rewrite_worst", "vec_rewrite_rest", "vec_rewrite_sum", "vec_original_worst")
_CHAIN_EXTRA = P.extra_features


@functools.cache
def load_vectors() -> tuple[Any, np.ndarray]:
    """wordllama's tokenizer and its l2_supercat 256-d table, from the installed wheel."""
    import wordllama
    from safetensors import safe_open
    from tokenizers import Tokenizer

    root = Path(wordllama.__file__).parent
    tok = Tokenizer.from_file(str(root / "tokenizers" / "l2_supercat_tokenizer_config.json"))
    with safe_open(str(root / "weights" / "l2_supercat_256.safetensors"), framework="np") as f:
        table = f.get_tensor("embedding.weight").astype(np.float32)
    return tok, table


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _windows(text: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The text's summed token vectors and the sums over each window of SPAN of CHUNKS runs."""
    tok, table = load_vectors()
    ids = tok.encode(text, add_special_tokens=False).ids
    vecs = table[ids] if ids else np.zeros((1, table.shape[1]), np.float32)
    cuts = [round(i * len(vecs) / CHUNKS) for i in range(CHUNKS + 1)]
    runs = np.stack([vecs[cuts[i]:cuts[i + 1]].sum(0) for i in range(CHUNKS)])
    return vecs.sum(0), [runs[i:i + SPAN].sum(0) for i in range(CHUNKS - SPAN + 1)]


def vector_features(original: str, text: str) -> list[float]:
    """``VECTOR``, in that order."""
    o_total, o_windows = _windows(original)
    r_total, r_windows = _windows(text)
    uo, ur = _unit(o_total), _unit(r_total)
    vs_original = [float(_unit(w) @ uo) for w in r_windows]
    vs_rest = [float(_unit(w) @ _unit(r_total - w)) for w in r_windows]
    return [float(uo @ ur), min(vs_original), min(vs_rest),
            min(a + b for a, b in zip(vs_original, vs_rest, strict=True)),
            min(float(_unit(w) @ ur) for w in o_windows)]


def extra_features(original: str, text: str) -> list[float]:
    return _CHAIN_EXTRA(original, text) + vector_features(original, text)


GENRES = ("web", "code", "wiki")  # indicators; textbook and book are the base
_POSITIONAL_SCORED = P._scored


def _genre_scored(original: str, text: str, genre: str) -> dict[str, Any]:
    key = ("genre", original, text, genre)
    if key not in T._cache:
        got = _POSITIONAL_SCORED(original, text, genre)
        T._cache[key] = {**got, "x": got["x"] + [float(genre == g) for g in GENRES]}
    return T._cache[key]


def install(middle_binding: bool, genre: bool = False) -> None:
    """The positional experiment's extra features extended by ``VECTOR`` (and, with ``genre``,
    genre indicators); targets of the first-half experiment, with the middle third binding
    when asked."""
    P.EXTRA = P.EXTRA + VECTOR + (tuple(f"genre_{g}" for g in GENRES) if genre else ())
    P.extra_features = extra_features
    if genre:
        P._scored = _genre_scored
        full = P.positional_features
        P.positional_features = lambda original, text: full(original, text) + [1.0, 0.0, 0.0]  # pages are web
    if middle_binding:
        F.TARGETS["middle_third_replaced"] = 0.95


def auc(pairs: list[dict[str, str]], seed: int = T.SEED) -> dict[str, dict[str, float]]:
    """ROC AUC of each vector feature alone, references against each corruption (no learning;
    a corruption per reference, built from a same-genre document as the experiments do)."""
    from sklearn.metrics import roc_auc_score

    from tests.corpora import corrupted

    bad = corrupted(pairs, seed)
    rng = random.Random(seed + 1)
    got: dict[str, list[list[float]]] = {}
    for i, p in enumerate(pairs):
        others = [j for j, q in enumerate(pairs) if j != i and q["genre"] == p["genre"]] or \
            [j for j in range(len(pairs)) if j != i]
        texts = {"reference": p["rewrite"], **bad[i], **P.replaced(p["rewrite"], pairs[rng.choice(others)]["rewrite"], rng)}
        for kind, text in texts.items():
            got.setdefault(kind, []).append(vector_features(p["original"], text))
    ref = np.array(got.pop("reference"))
    out = {}
    for kind, xs in got.items():
        x = np.array(xs)
        y = [1] * len(ref) + [0] * len(x)
        out[kind] = {name: round(float(roc_auc_score(y, np.r_[ref[:, j], x[:, j]])), 4)
                     for j, name in enumerate(VECTOR)}
    return out


def main() -> None:
    from tests.corpora import tinyhelen_pairs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path("leaner_sentence_vectors.json"))
    ap.add_argument("--auc", action="store_true")
    ap.add_argument("--content-only", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--variants", default="span_kept,span_dropped,middle_untrained")
    ap.add_argument("--nested", help="a variant, or 'auto': the quick check's best margin")
    ap.add_argument("--pages", action="store_true")
    ap.add_argument("--middle-binding", action="store_true")
    ap.add_argument("--genre", action="store_true", help="genre indicators as features")
    args = ap.parse_args()
    install(args.middle_binding, args.genre)
    pairs = tinyhelen_pairs()
    table: dict[str, Any] = {"status": "experiment (issue 17, sentence vectors)", "features_added": list(VECTOR),
                             "targets": F.TARGETS, "chunks": CHUNKS, "span": SPAN}

    def save() -> None:
        args.json.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")

    if args.auc:
        t = time.process_time()
        table["auc_single_features"] = auc(pairs)
        table["auc_cpu_seconds"] = round(time.process_time() - t, 2)
        print(json.dumps(table["auc_single_features"]), file=sys.stderr, flush=True)
        save()
    if args.content_only:
        F.use("span_kept")
        table["content_only_5fold (diagnostic, not the validator)"] = P.content_only(T.score(pairs))
        save()
    variants = args.variants.split(",")
    if args.quick:
        table["quick_5fold_all_pairs (selection only, not an estimate)"] = got = {}
        for variant in variants:
            F.use(variant)
            got[variant] = F.quick(T.score(pairs))
            print(variant, json.dumps(got[variant]), file=sys.stderr, flush=True)
            save()
    variant = args.nested
    if variant == "auto":
        got = table["quick_5fold_all_pairs (selection only, not an estimate)"]
        variant = max(got, key=lambda v: got[v]["margin"])
    if variant:
        F.use(variant)
        table["nested_variant"] = variant
        model, selection = T.shipped(pairs)
        table["fit_on_all_pairs"] = selection
        save()
        table["nested_cv"] = T.nested(pairs, 1)
        save()
        print(json.dumps(table["nested_cv"]["rates"]), file=sys.stderr, flush=True)
        if args.pages:
            table["unseen_pages (model fitted on all 421 pairs)"] = P.unseen_pages(model)
            save()


if __name__ == "__main__":
    main()
