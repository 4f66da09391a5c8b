"""The fastText quality classifier, trained and applied as in DCLM's recipe.

DCLM (Li et al. 2024, `fasttext_oh_eli5`): fastText supervised on word unigrams and bigrams
(``wordNgrams=2``), positives labelled ``__label__hq`` against negatives ``__label__cc``,
balanced classes, each document on one line with its whitespace collapsed; the score of a
document is the probability of ``__label__hq``. Our defaults differ in size only: fastText's
``dim=100`` and 200k hash buckets for the bigrams (fastText's 2M buckets at dim 256 make a
2 GB model, which every Ray worker would load); both are options.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tasks.quality.models import load_fasttext, local_copy

POSITIVE = "__label__hq"
NEGATIVE = "__label__cc"


def prepare(text: str) -> str:
    r"""One line, whitespace runs collapsed to one space: ``re.sub(r"\s+", " ", text).strip()``,
    which str.split() does three times faster (both split on what str.isspace accepts)."""
    return " ".join(text.split())


@dataclass(frozen=True)
class TrainParams:
    dim: int = 100
    word_ngrams: int = 2
    bucket: int = 200_000
    min_count: int = 3
    epoch: int = 5
    lr: float = 0.1
    validation_fraction: float = 0.1
    seed: int = 0
    max_docs_per_class: int | None = None
    balance: bool = True  # downsample the larger class of the training split to the smaller


def split_of(text: str, fraction: float, seed: int) -> bool:
    """True for validation: a deterministic hash split, stable across reruns and machines."""
    h = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    pos, neg = int(labels.sum()), int((1 - labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def train(positives: list[str], negatives: list[str], params: TrainParams) -> tuple[bytes, dict[str, Any]]:
    """Train on the documents outside the validation split; return the model file's bytes and
    the validation figures (precision and recall at 0.5, AUC)."""
    import fasttext

    rows = [(POSITIVE, prepare(t)) for t in positives] + [(NEGATIVE, prepare(t)) for t in negatives]
    rows = [(lab, t) for lab, t in rows if t]
    val = [split_of(t, params.validation_fraction, params.seed) for _, t in rows]
    train_rows = [r for r, v in zip(rows, val, strict=True) if not v]
    val_rows = [r for r, v in zip(rows, val, strict=True) if v]
    rng = np.random.default_rng(params.seed)
    if params.balance:
        pos_rows = [r for r in train_rows if r[0] == POSITIVE]
        neg_rows = [r for r in train_rows if r[0] == NEGATIVE]
        n = min(len(pos_rows), len(neg_rows))
        pos_rows = [pos_rows[i] for i in sorted(rng.choice(len(pos_rows), n, replace=False))]
        neg_rows = [neg_rows[i] for i in sorted(rng.choice(len(neg_rows), n, replace=False))]
        train_rows = pos_rows + neg_rows
    train_rows = [train_rows[i] for i in rng.permutation(len(train_rows))]  # fastText learns in file order
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(f"{lab} {t}\n" for lab, t in train_rows)
        out = os.path.join(tmp, "model.bin")
        lr_used = _train_isolated(path, out, params)
        model = fasttext.load_model(out)
        with open(out, "rb") as fh:
            data = fh.read()
    figures: dict[str, Any] = {
        "lr_used": lr_used,
        "train": {"positive": sum(lab == POSITIVE for lab, _ in train_rows),
                  "negative": sum(lab == NEGATIVE for lab, _ in train_rows)},
        "validation": {"positive": sum(lab == POSITIVE for lab, _ in val_rows),
                       "negative": sum(lab == NEGATIVE for lab, _ in val_rows)},
    }
    if val_rows:
        scores = hq_probability(model, [t for _, t in val_rows])
        labels = np.array([lab == POSITIVE for lab, _ in val_rows], dtype=np.int64)
        predicted = scores >= 0.5
        tp = int((predicted & (labels == 1)).sum())
        figures["validation"].update(
            precision=round(tp / max(1, int(predicted.sum())), 4),
            recall=round(tp / max(1, int(labels.sum())), 4),
            auc=round(auc(scores, labels), 4),
        )
    return data, figures


def _train_isolated(train_file: str, model_file: str, params: TrainParams) -> float:
    """fastText training in a fresh process: in a long-lived process that has run other native
    code, training was seen to diverge ("Encountered NaN") at any learning rate, while the same
    data and settings train cleanly in a new process. Halves the rate on divergence."""
    import json
    import subprocess
    import sys

    lr = params.lr
    for _ in range(4):
        args = {"input": train_file, "output": model_file, "dim": params.dim, "wordNgrams": params.word_ngrams,
                "bucket": params.bucket, "minCount": params.min_count, "epoch": params.epoch, "lr": lr,
                "seed": params.seed}
        proc = subprocess.run([sys.executable, "-c", _TRAIN_CHILD, json.dumps(args)], capture_output=True, text=True)
        if proc.returncode == 0:
            return lr
        if "NaN" not in proc.stderr:
            raise ValueError(f"fastText training failed: {proc.stderr.strip()[-500:]}")
        lr /= 2
    raise ValueError(f"fastText training diverged (NaN) down to lr={lr * 2}; try another dim or bucket")


_TRAIN_CHILD = """
import json, sys
import fasttext
a = json.loads(sys.argv[1])
out = a.pop("output")
model = fasttext.train_supervised(thread=1, verbose=0, **a)
model.save_model(out)
"""


def hq_probability(model: Any, texts: list[str]) -> np.ndarray:
    """Each text's probability of the positive label. A linear model (unigrams, no subwords: the combined
    score's article classifier) is evaluated by :mod:`tasks.quality.fast.linear` from the code
    points, equal to fastText's prediction up to float rounding; any other by fastText."""
    from tasks.quality.fast.linear import linear_form

    linear = linear_form(model, POSITIVE)
    if linear is not None:
        return linear.probability(texts)
    labels, probs = model.predict([prepare(t) for t in texts], k=2)
    out = []
    for lab, p in zip(labels, probs, strict=True):
        scores = dict(zip(lab, p, strict=True))
        out.append(min(1.0, float(scores.get(POSITIVE, 0.0))))
    return np.array(out)


def score(texts: list[str], model_url: str, endpoint_url: str | None = None) -> np.ndarray:
    """Probability of the positive class for each text; the model is loaded once per process."""
    model = load_fasttext(local_copy(model_url, endpoint_url))
    return hq_probability(model, texts) if texts else np.zeros(0)


def model_card(name: str, positive: list[str], negative: list[str], params: TrainParams,
               figures: dict[str, Any], model_sha256: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "fasttext supervised quality classifier (DCLM recipe)",
        "created": datetime.now(UTC).isoformat(),
        "labels": {"positive": POSITIVE, "negative": NEGATIVE},
        "score": f"probability of {POSITIVE}",
        "data": {"positive": positive, "negative": negative},
        "params": params.__dict__,
        "counts": figures,
        "validation": figures.get("validation", {}),
        "model_sha256": model_sha256,
    }
