"""Page lines against a human-kept text: which lines are content (the labels the learned writer
trains on), and content-line precision / recall / F1 of what a writer kept.

Two labellings:

- ``exact``: a page line is content when, whitespace-normalized, it equals a line of the kept
  text. This is the rule ``bench/prox_bench.py`` and ``tests/test_prox.py`` have always used
  (on the Readability pages).
- ``aligned`` (the default): also when it equals a kept line once *all* whitespace is ignored
  (HTML-to-text converters differ on spaces around inline tags: "NPR ’s" vs "NPR’s"), when a
  page line of at least ``MIN_PIECE`` characters is a piece of the kept text, or when a kept
  line of at least ``MIN_PIECE`` characters makes up most of a page line (a paragraph with a
  caption or source tag glued to it). Short pieces ("India", "1", "Twitter") are not matched
  inside kept paragraphs: they would be found there by chance.
"""

from __future__ import annotations

from collections.abc import Sequence

MIN_PIECE = 20  # characters (whitespace removed) for a line to match inside a kept paragraph
MOST = 0.6  # share of a page line a kept line must cover to make it content


def key(line: str) -> str:
    """Whitespace-normalized line: the bench's identity of a line."""
    return " ".join(line.split())


def tight(line: str) -> str:
    return "".join(line.split())


def content_labels(page: str, kept: str, exact: bool = False) -> list[bool]:
    """One label per line of ``page`` (split on ``\\n``): True when the line is content."""
    lines = page.split("\n")
    if exact:
        keys = {key(ln) for ln in kept.split("\n")}
        return [key(ln) in keys for ln in lines]
    kept_lines = [tight(ln) for ln in kept.split("\n")]
    kept_set = set(kept_lines)
    long_kept = [k for k in dict.fromkeys(kept_lines) if len(k) >= MIN_PIECE]
    flat = "\n".join(kept_lines)
    out = []
    for ln in lines:
        t = tight(ln)
        if not t:
            out.append(False)  # an empty line carries no content either way
        elif t in kept_set or len(t) >= MIN_PIECE and t in flat:
            out.append(True)
        else:
            out.append(any(len(k) >= MOST * len(t) and k in t for k in long_kept if len(k) <= len(t)))
    return out


def coverage(page: str, kept: str, labels: Sequence[bool]) -> float:
    """Share of the kept text's characters (whitespace removed) found in the page's content
    lines: low when the kept text is not (mostly) in the page."""
    total = len(tight(kept))
    if not total:
        return 0.0
    found = {tight(ln) for ln, c in zip(page.split("\n"), labels, strict=True) if c}
    return min(1.0, sum(len(t) for t in found) / total)


def kept_by_output(page: str, refined: str | None) -> list[bool]:
    """Which page lines survive in a writer's output (a dropped document keeps none): a line is
    kept when a line of the output equals it (whitespace-normalized), as the bench counts."""
    if refined is None:
        return [False] * len(page.split("\n"))
    out = {key(ln) for ln in refined.split("\n")}
    return [key(ln) in out for ln in page.split("\n")]


def scores(labels: Sequence[Sequence[bool]], kept: Sequence[Sequence[bool]]) -> dict[str, dict[str, float] | int]:
    """Micro-averaged over all page lines: ``content`` (a kept line that is content is a true
    positive: the issue's content-line F1) and ``boilerplate`` (a removed line that is not
    content is a true positive: the figure docs/prox.md reported for the heuristic writer)."""
    tp = fp = fn = tn = 0
    for lab, kp in zip(labels, kept, strict=True):
        for c, k in zip(lab, kp, strict=True):
            tp += c and k
            fp += k and not c
            fn += c and not k
            tn += not c and not k
    return {"lines": tp + fp + fn + tn, "content": _prf(tp, fp, fn), "boilerplate": _prf(tn, fn, fp)}


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}
