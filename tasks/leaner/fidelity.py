"""Does a rewrite say what its original said? Lexical alignment of content words.

Both texts become sequences of lemmas (``lemminflect``; numbers kept as written). Each lemma
weighs by how informative it is, ``clip(6.5 - zipf, 0, 4)`` with wordfreq's Zipf frequency:
"the" weighs 0, "people" about 0.4, "volcano" about 3.5, a rare name or number up to 4. The
rewrite is aligned to the original by the heaviest chain of equal lemmas that is increasing
in both texts (a weighted longest common subsequence, found as a longest increasing
subsequence over the matching positions). Order matters: words of another document match
a long original here and there by chance, but those matches do not line up.

- **topic**: the share of the rewrite's weight that lies on the chain;
- **fidelity**: the same share in the weaker half of the rewrite (cut at the sentence
  boundary nearest the middle), so a rewrite whose second half is about something else
  fails even when the first half is faithful;
- **reach**: how far into the original the chain goes (last aligned position / length), so a
  rewrite that stops early fails even when what it says is right;
- **original_first / original_second**: the share of the content weight of the original's
  first and second half (cut at the middle of its weight) that lies on the chain. A rewrite
  whose second half is another text leaves the original's tail covered only by chance matches,
  while a real rewrite covers both halves alike; the learned content model
  (``tasks/leaner/content_model.py``) uses them with the shares above;
- **original_worst / rewrite_worst / original_run / rewrite_run**: where the gap is, without
  caring where: the least-covered run of tokens holding a third of the weight, and the
  heaviest run of off-chain weight (``worst_window``, ``run_excess``), so that a rewrite whose
  start or middle is another text shows too, not only one whose end is.

Capitalized words of the rewrite that the original lacks are left out of the shares: with
``anonymize`` the rewrite replaces names and places by other names and placeholders ("FR
country"), which are neither evidence for nor against it. A placeholder's two capitals are
the place's initials (the prompt asks for that, and upstream's rewrites do it: "SA town" for
Saint-Hilaire), so one that matches the first two letters of a capitalized word of the
original counts as that word. Synonyms are not matched: the
simple substitutes a rewrite uses are common words, which weigh little either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)|\n")
MIN_WEIGHT = 0.5  # lemmas lighter than this (the ~300 most common words) are not aligned
MAX_OCCURRENCES = 50  # a lemma this frequent in the original says nothing about position


@lru_cache(maxsize=200_000)
def lemma(word: str) -> str:
    """Shortest lemma lemminflect knows for a lower-cased word (the word itself if none)."""
    if word[0].isdigit():
        return word
    from lemminflect import getAllLemmas

    found = getAllLemmas(word)
    if not found:
        return word
    return min({x for forms in found.values() for x in forms}, key=lambda x: (len(x), x))


@lru_cache(maxsize=200_000)
def weight(lem: str) -> float:
    from wordfreq import zipf_frequency

    return max(0.0, min(4.0, 6.5 - zipf_frequency(lem, "en")))


@dataclass(frozen=True)
class Token:
    lemma: str
    weight: float
    capitalized: bool
    end: int  # character offset where the word ends
    initials: str = ""  # first two letters, upper-cased, of a capitalized word
    code: bool = False  # two capitals, like a placeholder's "FR"


def content(text: str) -> list[Token]:
    out = []
    for m in _WORD.finditer(text.replace("\u2019", "'")):
        s = m.group(0)
        lem = lemma(s.lower())
        out.append(Token(lem, weight(lem), s[0].isupper(), m.end(), s[:2].upper() if s[0].isupper() else "",
                         _PLACEHOLDER.fullmatch(s) is not None))
    return out


_PLACEHOLDER = re.compile(r"[A-Z]{2}")


def resolve_placeholders(rewrite: list[Token], original: list[Token]) -> list[Token]:
    """Rewrite tokens that are a place placeholder ("FR") take the lemma and weight of the
    first capitalized original word with those initials ("France"), if there is one."""
    names: dict[str, Token] = {}
    for tok in original:
        if tok.capitalized and len(tok.lemma) > 2:
            names.setdefault(tok.initials, tok)
    out = []
    for tok in rewrite:
        name = names.get(tok.initials) if tok.code else None
        out.append(Token(name.lemma, name.weight, True, tok.end, tok.initials, True) if name else tok)
    return out


def chain(rewrite: list[Token], original: list[Token]) -> list[tuple[int, int]]:
    """The heaviest chain of (rewrite index, original index) pairs with equal lemmas,
    strictly increasing in both (Fenwick tree over original positions: O(P log n) for P
    matching pairs)."""
    occurrences: dict[str, list[int]] = {}
    for j, tok in enumerate(original):
        if tok.weight >= MIN_WEIGHT:
            occurrences.setdefault(tok.lemma, []).append(j)
    size = len(original) + 1
    tree_score = [0.0] * (size + 1)
    tree_node = [-1] * (size + 1)
    nodes: list[tuple[int, int, int]] = []  # (rewrite index, original index, previous node)
    best_score, best_node = 0.0, -1
    for i, tok in enumerate(rewrite):
        js = occurrences.get(tok.lemma)
        if not js or len(js) > MAX_OCCURRENCES:
            continue
        found = []
        for j in js:  # best chain ending before original position j (queried before updating)
            s, p, k = 0.0, -1, j
            while k > 0:
                if tree_score[k] > s:
                    s, p = tree_score[k], tree_node[k]
                k -= k & -k
            found.append((j, s + tok.weight, p))
        for j, s, p in found:
            nodes.append((i, j, p))
            node = len(nodes) - 1
            k = j + 1
            while k <= size:
                if s > tree_score[k]:
                    tree_score[k], tree_node[k] = s, node
                k += k & -k
            if s > best_score:
                best_score, best_node = s, node
    out = []
    while best_node != -1:
        i, j, best_node = nodes[best_node]
        out.append((i, j))
    return out[::-1]


@dataclass(frozen=True)
class Alignment:
    topic: float
    fidelity: float
    reach: float
    weight: float  # the rewrite's content weight the shares are taken over
    first: float = 0.0  # share in the rewrite's first half
    second: float = 0.0  # share in the rewrite's second half
    original_first: float = 0.0  # share of the original's first-half weight on the chain
    original_second: float = 0.0
    n_original: int = 0  # word tokens of each text
    n_rewrite: int = 0
    # position-free: the least-covered run holding a third of the weight, and the heaviest run
    # of off-chain weight beyond the text's own rate (``worst_window``, ``run_excess``)
    original_worst: float = 0.0
    rewrite_worst: float = 0.0
    original_run: float = 0.0
    rewrite_run: float = 0.0


def _share(rewrite: list[Token], aligned: set[int], lo: int, hi: int) -> tuple[float, float]:
    on = total = 0.0
    for i in range(lo, hi):
        tok = rewrite[i]
        if tok.weight < MIN_WEIGHT:
            continue
        if i in aligned:
            on += tok.weight
            total += tok.weight
        elif not tok.capitalized:
            total += tok.weight
    return on, total


def _middle(rewrite_text: str, rewrite: list[Token]) -> int:
    """Index of the first token of the second half: the sentence boundary nearest the
    middle of the content weight (the middle token when there is no boundary)."""
    if len(rewrite) < 2:
        return len(rewrite)
    total = sum(t.weight for t in rewrite)
    cum, half_at = 0.0, len(rewrite) // 2
    for idx, t in enumerate(rewrite):
        cum += t.weight
        if cum >= total / 2:
            half_at = idx + 1
            break
    candidates, b = [], 0
    bounds = [m.end() for m in _SENTENCE_END.finditer(rewrite_text)]
    for i in range(1, len(rewrite)):  # tokens i-1 and i have a sentence end between them
        while b < len(bounds) and bounds[b] < rewrite[i - 1].end:
            b += 1
        if b < len(bounds) and bounds[b] < rewrite[i].end:
            candidates.append(i)
    if not candidates:
        return half_at
    best = min(candidates, key=lambda i: abs(i - half_at))
    # a boundary far from the middle (one long sentence) would make a tiny "half"
    return best if abs(best - half_at) <= len(rewrite) // 4 else half_at


def align(original: str, rewrite: str) -> Alignment:
    return align_tokens(original, rewrite)[0]


def align_tokens(original: str, rewrite: str) -> tuple[Alignment, list[Token], list[Token], list[tuple[int, int]]]:
    """``align`` with what it was computed from: the original's and the rewrite's tokens and
    the chain (for measures over the chain that the shipped model does not use)."""
    o = content(original)
    r = resolve_placeholders(content(rewrite), o)
    pairs = chain(r, o)
    aligned = {i for i, _ in pairs}
    on, total = _share(r, aligned, 0, len(r))
    mid = _middle(rewrite, r)
    halves = [_share(r, aligned, 0, mid), _share(r, aligned, mid, len(r))]
    # a half with no content weight (a very short rewrite) is judged with the whole
    first, second = ((a / b if b else on / total if total else 0.0) for a, b in halves)
    reach = (pairs[-1][1] + 1) / len(o) if pairs else 0.0
    o_on = {j for _, j in pairs}
    o_first, o_second = _original_halves(o, o_on)
    o_w = [t.weight if t.weight >= MIN_WEIGHT else 0.0 for t in o]
    # as in the shares: an anonymized name off the chain counts for nothing
    r_w = [0.0 if t.weight < MIN_WEIGHT or (i not in aligned and t.capitalized) else t.weight
           for i, t in enumerate(r)]
    return Alignment(topic=on / total if total else 0.0, fidelity=min(first, second), reach=reach, weight=total,
                     first=first, second=second, original_first=o_first, original_second=o_second,
                     n_original=len(o), n_rewrite=len(r),
                     original_worst=worst_window(o_w, o_on), rewrite_worst=worst_window(r_w, aligned),
                     original_run=run_excess(o_w, o_on), rewrite_run=run_excess(r_w, aligned)), r, o, pairs


def worst_window(weights: list[float], aligned: set[int], size: float = 1 / 3) -> float:
    """The lowest on-chain share of weight over runs of consecutive tokens holding ``size`` of
    the total weight (two pointers: O(n)). A replaced stretch leaves a window with only chance
    matches wherever it sits, since the chain is monotone."""
    total = sum(weights)
    if total <= 0:
        return 0.0
    need = size * total
    worst, lo, w, on = 1.0, 0, 0.0, 0.0
    for hi, x in enumerate(weights):
        w += x
        on += x if hi in aligned else 0.0
        while lo < hi and w - weights[lo] >= need:
            w -= weights[lo]
            on -= weights[lo] if lo in aligned else 0.0
            lo += 1
        if w >= need:
            worst = min(worst, on / w)
    return max(0.0, worst)


def run_excess(weights: list[float], aligned: set[int]) -> float:
    """The heaviest run of off-chain weight in excess of the text's own off-chain rate, as a
    share of the total weight, divided by the on-chain share (Kadane's maximum subarray): a
    paraphrase's misses are scattered, a replaced stretch is one run; the division makes loose
    and close paraphrases comparable."""
    total = sum(weights)
    if total <= 0:
        return 0.0
    p = sum(w for i, w in enumerate(weights) if i in aligned) / total
    best = cur = 0.0
    for i, w in enumerate(weights):
        cur = max(0.0, cur + w * ((0.0 if i in aligned else 1.0) - (1.0 - p)))
        best = max(best, cur)
    return best / total / max(p, 1e-3)


def _original_halves(original: list[Token], aligned: set[int]) -> tuple[float, float]:
    """Share of each half's content weight (the original cut at the middle of its weight)
    that lies on the chain."""
    weights = [t.weight if t.weight >= MIN_WEIGHT else 0.0 for t in original]
    total, cum, mid = sum(weights), 0.0, len(original)
    for k, w in enumerate(weights):
        cum += w
        if cum >= total / 2:
            mid = k + 1
            break

    def share(lo: int, hi: int) -> float:
        part = sum(weights[lo:hi])
        return sum(weights[j] for j in range(lo, hi) if j in aligned) / part if part else 0.0

    return share(0, mid), share(mid, len(original))
