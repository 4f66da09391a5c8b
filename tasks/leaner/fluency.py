"""Word-salad detection without a language model: how much word order helps predict the
next token.

Tokens are the most common English words (from ``wordfreq``), sentence punctuation, and a few
shape classes for everything else (capitalized word, other word, number). A bigram model over
them, trained on real fluent text (``scripts/train_leaner_fluency.py``), scores a text by its
mean pointwise mutual information between neighbours, log P(t | previous) - log P(t), in nats
per token. Fluent text scores well above zero; the same words in a random order score near
zero or below, whatever their vocabulary, because the unigram term cancels the words' own
frequency. The vocabulary is mostly function words, so a model trained on encyclopedic text
still judges order in web, textbook or instruction prose (measured in docs/leaner.md).

The optional language-model score (``mean_log_likelihood``) is the mean token log-likelihood
under a GGUF model through llama.cpp's prompt evaluation; it costs seconds per document on a
CPU (docs/leaner.md) and is used only when ``leaner.fluency_model: llm``.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

MODEL_PATH = Path(__file__).with_name("models") / "fluency_bigram.json.gz"
VOCAB_SIZE = 600
# words, numbers, and each punctuation mark as its own token
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+(?:[.,]\d+)*|[.!?,;:()\"]")
_PUNCT = set('.!?,;:()"')
BOS = "<s>"


def _vocabulary(size: int) -> list[str]:
    from wordfreq import top_n_list

    return [w for w in top_n_list("en", size * 2) if re.fullmatch(r"[a-z]+(?:'[a-z]+)?", w)][:size]


def tokens(text: str, vocab: frozenset[str]) -> list[str]:
    """The model's token classes; a line break starts a new sentence."""
    out: list[str] = []
    for line in text.replace("\u2019", "'").split("\n"):
        found = _TOKEN.findall(line)
        if not found:
            continue
        out.append(BOS)
        for tok in found:
            low = tok.lower()
            if tok in _PUNCT:
                out.append(tok)
            elif low in vocab:
                out.append(low)
            elif tok[0].isdigit():
                out.append("<num>")
            elif tok[0].isupper():
                out.append("<cap>")
            else:
                out.append("<w>")
    return out


def train(texts: Iterable[str], size: int = VOCAB_SIZE, min_count: int = 2) -> dict[str, Any]:
    """Unigram and bigram counts over the token classes (bigrams seen fewer than
    ``min_count`` times are left out, which keeps the file small)."""
    vocab = frozenset(_vocabulary(size))
    uni: Counter[str] = Counter()
    bi: Counter[tuple[str, str]] = Counter()
    for text in texts:
        toks = tokens(text, vocab)
        uni.update(toks)
        bi.update(zip(toks, toks[1:], strict=False))
    return {"vocab_size": size, "unigrams": dict(sorted(uni.items())),
            "bigrams": {f"{a} {b}": n for (a, b), n in sorted(bi.items()) if n >= min_count}}


def save(model: dict[str, Any], path: Path = MODEL_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(model, sort_keys=True, separators=(",", ":")).encode("utf-8")
    # mtime 0: the same counts give the same bytes
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)


class BigramFluency:
    """Absolute-discounting bigram model interpolated with the unigram distribution."""

    def __init__(self, model: dict[str, Any], discount: float = 0.75):
        self.vocab = frozenset(_vocabulary(int(model["vocab_size"])))
        uni = model["unigrams"]
        total = sum(uni.values())
        types = len(uni) + 1
        self.log_uni = {t: math.log((n + 1) / (total + types)) for t, n in uni.items()}
        self.log_unseen = math.log(1 / (total + types))
        self.big: dict[str, dict[str, int]] = {}
        for key, n in model["bigrams"].items():
            a, b = key.split(" ")
            self.big.setdefault(a, {})[b] = n
        self.ctx_total = {a: sum(v.values()) for a, v in self.big.items()}
        self.discount = discount

    def _log_cond(self, prev: str, tok: str) -> float:
        p_uni = math.exp(self.log_uni.get(tok, self.log_unseen))
        follow = self.big.get(prev)
        if not follow:
            return math.log(p_uni)
        total = self.ctx_total[prev]
        backoff = self.discount * len(follow) / total
        return math.log(max(follow.get(tok, 0) - self.discount, 0.0) / total + backoff * p_uni)

    def score(self, text: str) -> tuple[float, int]:
        """Mean log P(t | previous) - log P(t) over the text's tokens (after each sentence
        start), and how many tokens were scored."""
        toks = tokens(text, self.vocab)
        total, n = 0.0, 0
        for prev, tok in zip(toks, toks[1:], strict=False):
            if tok == BOS:
                continue
            total += self._log_cond(prev, tok) - self.log_uni.get(tok, self.log_unseen)
            n += 1
        return (total / n if n else 0.0), n


@cache
def bigram_model(path: str = str(MODEL_PATH)) -> BigramFluency:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"fluency model {p}: file not found (scripts/train_leaner_fluency.py makes it)")
    with gzip.open(p, "rt", encoding="utf-8") as f:
        return BigramFluency(json.load(f))


_FENCED = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.S)
_CODE_LIKE = re.compile(r"^(?:\t| {4})|[{};=<>\[\]]\s*$|^\s*(?://|#|/\*|\*)")


def without_code_blocks(text: str) -> str:
    """The text without fenced and inline code (a fenced block leaves a line break)."""
    return _FENCED.sub(lambda m: "\n" if "\n" in m.group(0) else " ", text)


def prose(text: str) -> str:
    """The text without fenced or inline code and code-like lines (indented, or ending in a
    bracket, brace, semicolon or operator, or starting as a comment): word order in code is
    not English word order, and a rewrite of code keeps its code."""
    lines = without_code_blocks(text).split("\n")
    return "\n".join(ln for ln in lines if not _CODE_LIKE.search(ln))


def bigram_fluency(text: str, min_tokens: int = 20) -> float:
    """The bigram score of the text's prose (of the whole text when it has too little prose)."""
    model = bigram_model()
    value, n = model.score(prose(text))
    return value if n >= min_tokens else model.score(text)[0]


class LMFluency:
    """Mean token log-likelihood of a text under a GGUF model (prompt evaluation only, no
    generation); texts longer than the context are scored on their first ``n_ctx`` tokens."""

    def __init__(self, model_path: str | None = None, n_ctx: int = 1024, n_threads: int | None = None):
        from llama_cpp import Llama

        from tasks.llm.backends import close_at_exit, default_gguf

        self.llm = Llama(model_path=model_path or default_gguf(), n_ctx=n_ctx, n_threads=n_threads,
                         logits_all=True, verbose=False)
        close_at_exit(self.llm)
        self.n_ctx = n_ctx

    def mean_log_likelihood(self, text: str) -> float:
        import numpy as np

        toks = self.llm.tokenize(text.encode("utf-8"), add_bos=True)[: self.n_ctx]
        if len(toks) < 2:
            return 0.0
        self.llm.reset()
        self.llm.eval(toks)
        total = 0.0
        # a few rows at a time: a row is the whole vocabulary (262,144 entries for Gemma 3)
        for lo in range(0, len(toks) - 1, 64):
            hi = min(lo + 64, len(toks) - 1)
            logits = np.asarray(self.llm.scores[lo:hi], dtype=np.float32)
            top = logits.max(axis=1)
            lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
            total += float((logits[np.arange(hi - lo), toks[lo + 1:hi + 1]] - lse).sum())
        return total / (len(toks) - 1)


@cache
def lm_model(model_path: str | None = None, n_ctx: int = 1024) -> LMFluency:
    return LMFluency(model_path, n_ctx)
