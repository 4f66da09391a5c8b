"""The combined score's text statistics from the compiled pass equal the Python definition
(features.text_statistics), float for float, on every text of ../shared/data and on generated
text over every character class."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.quality import features
from tasks.quality.fast.stats import text_statistics_batch
from tests.corpora import SPECIAL_CHARACTERS as SPECIAL
from tests.corpora import shared_texts


def assert_equal(texts: list[str], where: list[str]) -> None:
    got = text_statistics_batch(texts, features.stop_words(), features.TERMINAL)
    for k, text in enumerate(texts):
        want = features.text_statistics(text)
        assert tuple(got[k].tolist()) == want, f"{where[k]}: compiled {got[k].tolist()} != python {want}"


def test_every_shared_text_equal() -> None:
    texts, where = shared_texts()
    assert len(texts) > 3000
    assert_equal(texts, where)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.one_of(st.sampled_from(SPECIAL), st.characters(), st.text(max_size=6)), max_size=40)
                .map("".join), min_size=1, max_size=8))
def test_generated_text_equal(texts: list[str]) -> None:
    assert_equal(texts, [repr(t) for t in texts])


def test_the_batch_is_what_the_score_uses() -> None:
    """compute() fills its four statistics columns from the batch, in FEATURES order."""
    texts = ["The cat sat on the mat.\nA line without an end", "___ !!! ???", ""]
    matrix = features.compute(texts, lambda ts: [0.5] * len(ts), [1.0, 0.0, 0.0])
    names = list(features.FEATURES)
    cols = [names.index(n) for n in ("log_words", "terminal_punctuation_lines", "stopword_share", "symbol_share")]
    for k, text in enumerate(texts):
        assert tuple(matrix[k, cols].tolist()) == features.text_statistics(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SPECIAL), st.characters(), st.text(max_size=6)), max_size=40).map("".join))
def test_classifier_input_is_the_regex_form(text: str) -> None:
    """The article classifier's one-line input equals DCLM's ``re.sub(r"\\s+", " ", t).strip()``."""
    import re

    from tasks.quality.classifier import prepare

    assert prepare(text) == re.sub(r"\s+", " ", text).strip()
