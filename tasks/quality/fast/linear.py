"""fastText's prediction for a linear two-label model, as one compiled pass over code points.

The article classifier of the combined score (``scripts/train_quality_scorer.py``) is a fastText
supervised model with softmax loss, word unigrams and no subwords (the DCLM-style classifiers
``refinery quality train`` builds by default use word bigrams: fastText runs those). For such a
model fastText's prediction is a function of each word alone: the hidden vector is the mean of
the input vectors of the line's known words and its end-of-line token (a literal ``</s>`` word
ends the line there, as fastText reads it), and the two labels' softmax is a logistic function
of the difference of their scores, so

    p(label) = sigmoid(mean over those words of w · (out[label] - out[other]))

with one number per vocabulary word. fastText spends most of a prediction building its line
(a Python string joined from the text's words, copied into C++, split again); here the words
are read where they lie, in the :class:`~tasks.quality.fast.stats.CodePoints` the score's
statistics read too, and looked up in a table built once from the model's own vocabulary.

Equal to fastText's ``predict`` up to float rounding (fastText sums in single precision; the
returned probability keeps fastText's ``+1e-5``): ``tests/test_quality_linear.py`` compares
both on every shared corpus. A model of another kind (subwords, word n-grams, hierarchical
softmax or negative sampling, more than two labels, quantized) gets ``None`` from
:func:`linear_form` and is run by fastText itself.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from tasks.quality.fast.stats import CodePoints, WordTable, hash_table, walk_batch

EOS = "</s>"  # fastText's end-of-line token: every line has one
_FASTTEXT_LOG_EPS = 1e-5  # fastText returns exp(log(p + 1e-5))


class LinearForm:
    """The per-word numbers of one model, for one label (the end-of-line token among them)."""

    def __init__(self, words: list[str], weights: np.ndarray, eos: int) -> None:
        self.table = WordTable(*hash_table([[ord(c) for c in w] for w in words]),
                               np.ascontiguousarray(weights, np.float64), eos)

    def probability(self, texts: list[str] | CodePoints) -> np.ndarray:
        """The label's probability for each text, as fastText's ``predict`` returns it for the
        text's words joined by single spaces (capped at 1)."""
        return self.from_sums(*walk_batch(texts, frozenset(), (), self.table)[1:])

    def from_sums(self, sums: np.ndarray, known: np.ndarray, stopped: np.ndarray) -> np.ndarray:
        """The probability from :func:`~tasks.quality.fast.stats.walk_batch`'s word sums (the
        score's statistics pass computes them on the way)."""
        # the line's own end, unless a literal end-of-line word ended it earlier
        eos = self.table.weights[self.table.stop]
        z = (sums + np.where(stopped, 0.0, eos)) / (known + ~stopped)
        return np.minimum(1.0, 1.0 / (1.0 + np.exp(-z)) + _FASTTEXT_LOG_EPS)


_FORMS: weakref.WeakKeyDictionary[Any, dict[str, LinearForm | None]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def linear_form(model: Any, label: str) -> LinearForm | None:
    """``model``'s (a loaded ``fasttext`` model) linear form for ``label``, built once per
    model object and label; None when the model is not of the linear two-label kind."""
    with _LOCK:
        forms = _FORMS.setdefault(model, {})
        if label not in forms:
            forms[label] = _build(model, label)
        return forms[label]


def _build(model: Any, label: str) -> LinearForm | None:
    args = model.f.getArgs()
    labels = list(model.get_labels())
    if (model.is_quantized() or args.loss.name != "softmax" or args.maxn > 0 or args.wordNgrams > 1
            or len(labels) != 2 or label not in labels):
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
    return LinearForm(words, inputs[: len(words)] @ (output[k] - output[1 - k]), words.index(EOS))
