"""The article classifier evaluated from code points (tasks.quality.fast.linear) equals
fastText's own prediction of the same model, on every text of ../shared/data and on generated
text; a model that is not linear is left to fastText."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.quality import classifier
from tasks.quality.fast.linear import linear_form
from tasks.quality.models import load_fasttext
from tasks.quality.scorer import load_scorer
from tests.conftest import shared
from tests.corpora import SPECIAL_CHARACTERS as SPECIAL
from tests.corpora import shared_texts


# fastText sums single-precision vectors; the compiled pass sums in double precision, so the two
# part by float32 rounding, which grows with a text's words (4.6e-6 on an 18,723-word HTML page,
# where fastText's own sum done in numpy float32 gives fastText's figure to the last digit)
def tolerance(text: str) -> float:
    return 2e-6 + 5e-10 * len(text.split())


def fasttext_probability(model, texts: list[str]) -> np.ndarray:
    labels, probs = model.predict([classifier.prepare(t) for t in texts], k=2)
    return np.array([min(1.0, float(dict(zip(lab, p, strict=True)).get(classifier.POSITIVE, 0.0)))
                     for lab, p in zip(labels, probs, strict=True)])


@pytest.fixture(scope="module")
def model():
    return load_fasttext(load_scorer().classifier_path)


def assert_close(model, texts: list[str], where: list[str]) -> None:
    got = classifier.hq_probability(model, texts)
    want = fasttext_probability(model, texts)
    bad = np.flatnonzero(np.abs(got - want) > np.array([tolerance(t) for t in texts]))
    assert not len(bad), f"{where[bad[0]]}: compiled {got[bad[0]]} != fastText {want[bad[0]]} ({len(bad)} texts)"


def test_the_shipped_classifier_is_linear(model) -> None:
    assert linear_form(model, classifier.POSITIVE) is not None


def test_every_shared_text_equal(model) -> None:
    texts, where = shared_texts()
    assert len(texts) > 3000
    assert_close(model, texts, where)
    # the probabilities spread over the range: a comparison of constants would prove nothing
    p = classifier.hq_probability(model, texts)
    assert p.max() - p.min() > 0.5 and len(np.unique(p)) > len(p) // 2


# fastText's line is cut at NUL as at white space; a token that starts like a label is no word;
# the model's own words, so that known words meet every separator
WORDS = ["the", "The", "news", "said", "Privacy", "Policy", "cookies", "</s>", "__label__hq", "__label__cc",
         "a\x00the", "\x00", "said.", "Home", "|"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.sampled_from(WORDS + [s for s in SPECIAL if s != "\ud800"]),
                                   st.characters(exclude_categories=("Cs",)), st.text(
                                       st.characters(exclude_categories=("Cs",)), max_size=6)),
                         max_size=40).map("".join), min_size=1, max_size=8))
def test_generated_text_equal(model, texts: list[str]) -> None:
    assert_close(model, texts, [repr(t) for t in texts])


def test_a_literal_end_of_line_word_ends_the_line_as_in_fasttext(model) -> None:
    """fastText stops reading a line at the word ``</s>`` (its end-of-line token): the words
    after it count for nothing."""
    texts = ["Privacy Policy cookies </s> the news said the court ruled today",
             "the news said </s> Privacy Policy cookies Home | Home | Home", "Home </s>\x00 news", "</s> the news",
             "a </s> b", "x </s>\x00 y", "</s>", "news </s> </s> Home", "Home </s>x news", "the\t</s>\nPrivacy"]
    assert_close(model, texts, texts)
    # and it matters: the same words without the marker score otherwise
    with_marker = classifier.hq_probability(model, texts[:2])
    without = classifier.hq_probability(model, [t.replace("</s>", "") for t in texts[:2]])
    assert np.abs(with_marker - without).min() > 0.1


def _tiny_model(tmp_path, word_ngrams: int):
    t = pq.read_table(shared("web_pages_scrapinghub/web_pages_scrapinghub.parquet"), columns=["gold_text", "page_text"])
    pos, neg = t.column("gold_text").to_pylist()[:60], t.column("page_text").to_pylist()[:60]
    # dim 16, as the shipped classifier: a fresh build of fastText diverged (NaN) at dim 8 on these pages
    params = classifier.TrainParams(dim=16, bucket=0 if word_ngrams == 1 else 10_000, epoch=5, word_ngrams=word_ngrams)
    blob, _ = classifier.train(pos, neg, params)
    (tmp_path / "m.bin").write_bytes(blob)
    return load_fasttext(tmp_path / "m.bin"), pos[:20] + neg[:20]


def test_a_quantized_model_is_left_to_fasttext(tmp_path) -> None:
    unigram, texts = _tiny_model(tmp_path, 1)
    assert linear_form(unigram, classifier.POSITIVE) is not None
    assert linear_form(unigram, classifier.NEGATIVE) is not linear_form(unigram, classifier.POSITIVE)
    assert_close(unigram, texts, [t[:40] for t in texts])
    unigram.quantize(qnorm=False, retrain=False, cutoff=0, dsub=2)
    unigram.save_model(str(tmp_path / "m.ftz"))
    quantized = load_fasttext(tmp_path / "m.ftz")  # as a quantized model file is loaded
    assert quantized.is_quantized() and linear_form(quantized, classifier.POSITIVE) is None
    assert np.array_equal(classifier.hq_probability(quantized, texts), fasttext_probability(quantized, texts))


def test_a_bigram_model_is_left_to_fasttext(tmp_path) -> None:
    """A model with word bigrams (the DCLM-style classifier's default) is not linear in its
    words: fastText runs it, and the probabilities are fastText's exactly."""
    bigram, texts = _tiny_model(tmp_path, 2)
    assert linear_form(bigram, classifier.POSITIVE) is None
    assert np.array_equal(classifier.hq_probability(bigram, texts), fasttext_probability(bigram, texts))


def test_the_score_sums_the_words_in_the_statistics_pass(model) -> None:
    """features.compute with the linear form (one pass: statistics and word sums) gives the
    statistics of the pass without it exactly, and fastText's article probability."""
    from tasks.quality import features

    texts, where = shared_texts()
    texts, where = texts[::7], where[::7]  # every shared set, a seventh of the texts
    english = np.linspace(0, 1, len(texts))
    fused = features.compute(texts, lambda t: pytest.fail("the fused pass must not call fastText"), english,
                             linear_form(model, classifier.POSITIVE))
    plain = features.compute(texts, lambda t: fasttext_probability(model, t), english)
    assert np.array_equal(fused[:, 1:], plain[:, 1:])
    p_fused, p_plain = 1 / (1 + np.exp(-fused[:, 0])), 1 / (1 + np.exp(-plain[:, 0]))
    bad = np.flatnonzero(np.abs(p_fused - p_plain) > np.array([tolerance(t) for t in texts]))
    assert not len(bad), [where[i] for i in bad[:3]]
