"""fastText's prediction for a linear two-label model, as one compiled pass over code points.

The article classifier of the combined score (and the models ``refinery quality train`` builds)
are fastText supervised models with softmax loss, word unigrams and no subwords. For such a
model fastText's prediction is a function of each word alone: the hidden vector is the mean of
the input vectors of the line's known words and its end-of-line token, and the two labels'
softmax is a logistic function of the difference of their scores, so

    p(label) = sigmoid(mean over those words of w · (out[label] - out[other]))

with one number per vocabulary word. fastText spends most of a prediction building its line
(a Python string joined from the text's words, copied into C++, split again); here the words
are read where they lie, in the :class:`~tasks.quality.fast.stats.CodePoints` the score's
statistics read too, and looked up in a table built once from the model's own vocabulary.

Equal to fastText's ``predict`` up to float rounding (fastText sums in single precision; the
returned probability keeps fastText's ``+1e-5``): ``tests/test_quality_linear.py`` compares
both on every shared corpus. A model of another kind (subwords, word n-grams, hierarchical
softmax or negative sampling, more than two labels) gets ``None`` from :func:`linear_form`
and is run by fastText itself.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
from numba import njit

from tasks.quality.fast.stats import CodePoints, hash_table, lookup

EOS = "</s>"  # fastText's end-of-line token: every line has one
_FASTTEXT_LOG_EPS = 1e-5  # fastText returns exp(log(p + 1e-5))


class LinearForm:
    """The per-word numbers of one model, for one label."""

    def __init__(self, words: list[str], weights: np.ndarray, eos_weight: float) -> None:
        self.slots, self.keys, self.starts, self.points = hash_table([[ord(c) for c in w] for w in words])
        self.weights = np.ascontiguousarray(weights, np.float64)
        self.eos_weight = float(eos_weight)

    def probability(self, texts: list[str] | CodePoints) -> np.ndarray:
        """The label's probability for each text, as fastText's ``predict`` returns it for the
        text's words joined by single spaces (capped at 1)."""
        cp = texts if isinstance(texts, CodePoints) else CodePoints(texts)
        sums = np.zeros(len(cp), np.float64)
        counts = np.zeros(len(cp), np.int64)
        if len(cp):
            _sum_weights(cp.points, cp.offsets, cp.flags, self.slots, self.keys, self.starts, self.points,
                         self.weights, sums, counts)
        z = (sums + self.eos_weight) / (counts + 1)
        return np.minimum(1.0, 1.0 / (1.0 + np.exp(-z)) + _FASTTEXT_LOG_EPS)


@njit(cache=True, nogil=True)
def _sum_weights(points, offsets, flags, slots, keys, starts, word_points, weights, out_sums, out_counts):
    """Per document, the sum of its known words' numbers and how many there are. A word is a
    run of code points that are neither white space (``str.isspace``, as ``str.split`` cuts)
    nor NUL (fastText cuts its line there too)."""
    for d in range(len(offsets) - 1):
        s, e = offsets[d], offsets[d + 1]
        total = 0.0
        n = 0
        i = s
        while i < e:
            c = points[i]
            if flags[c] & 4 or c == 0:
                i += 1
                continue
            h = np.uint64(0xCBF29CE484222325)
            j = i
            while j < e:
                c = points[j]
                if flags[c] & 4 or c == 0:
                    break
                h = (h ^ np.uint64(c)) * np.uint64(0x100000001B3)
                j += 1
            w = lookup(h, points, i, j, slots, keys, starts, word_points)
            if w >= 0:
                total += weights[w]
                n += 1
            i = j
        out_sums[d] = total
        out_counts[d] = n


_FORMS: weakref.WeakKeyDictionary[Any, LinearForm | None] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def linear_form(model: Any, label: str) -> LinearForm | None:
    """``model``'s (a loaded ``fasttext`` model) linear form for ``label``, built once per
    model object; None when the model is not of the linear two-label kind."""
    with _LOCK:
        if model not in _FORMS:
            _FORMS[model] = _build(model, label)
        return _FORMS[model]


def _build(model: Any, label: str) -> LinearForm | None:
    args = model.f.getArgs()
    labels = list(model.get_labels())
    if (args.loss.name != "softmax" or args.maxn > 0 or args.wordNgrams > 1 or len(labels) != 2
            or label not in labels):
        return None
    try:
        words = list(model.get_words(on_unicode_error="strict"))
    except UnicodeDecodeError:  # a word no text can hold: leave such a model to fastText
        return None
    if EOS not in words or len(set(words)) != len(words):
        return None
    inputs = np.asarray(model.get_input_matrix(), np.float64)
    output = np.asarray(model.get_output_matrix(), np.float64)
    k = labels.index(label)
    per_word = inputs[: len(words)] @ (output[k] - output[1 - k])
    eos = words.index(EOS)
    keep = [i for i in range(len(words)) if i != eos]
    return LinearForm([words[i] for i in keep], per_word[keep], per_word[eos])
