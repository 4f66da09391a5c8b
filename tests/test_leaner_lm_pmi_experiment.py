"""The NOT SHIPPED experiment scripts/experiment_leaner_lm_pmi.py (issue 17's positional blind
spot, docs/leaner.md): its token log-probabilities are llama.cpp's, and the PMI it derives
sees copied text. Whether that separates paraphrased references from replaced stretches is what
its results file answers. Slow: each text is two prompt evaluations of the bundled Gemma."""

from __future__ import annotations

import pytest

from tests.corpora import tinyhelen_pairs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exp():
    import scripts.experiment_leaner_lm_pmi as exp

    return exp


@pytest.fixture(scope="module")
def scorer(exp):
    return exp.PMIScorer(n_threads=2)


def test_row_bookkeeping_matches_llama_cpp_full_logits(scorer):
    """The selected-rows evaluation (256-token batches, only the scored rows asked for) gives
    the same log-probabilities as the project's full-logits scorer on a real rewrite that
    spans several batches."""
    from tasks.leaner.fluency import LMFluency

    text = next(p["rewrite"] for p in tinyhelen_pairs() if p["genre"] == "textbook")
    toks = [scorer.bos] + scorer.llm.tokenize(text.encode("utf-8"), add_bos=False)[:600]
    assert len(toks) > 512
    ours = scorer._logprobs(toks, 1)
    full = LMFluency(n_ctx=1024, n_threads=2)
    full_text = full.llm.detokenize(toks[1:]).decode("utf-8")
    assert full.llm.tokenize(full_text.encode("utf-8"), add_bos=True) == toks
    assert ours.mean() == pytest.approx(full.mean_log_likelihood(full_text), abs=2e-3)


def test_a_replaced_middle_of_a_copied_text_loses_its_pmi(exp, scorer):
    """Two real originals handed back as their own rewrite are far more predictable with
    the original in front (copying); with the middle third replaced by another original's
    words, the worst third's PMI drops to about nothing."""
    from tests.corpora import replaced_parts as replaced

    pairs = [p for p in tinyhelen_pairs() if p["genre"] == "textbook"][:3]
    for p, q in zip(pairs, pairs[1:], strict=False):
        itself = exp.features(scorer.score(p["original"], p["original"]))
        middle = exp.features(scorer.score(p["original"], replaced(p["original"], q["original"])["middle_third_replaced"]))
        assert itself["min_third_pmi"] > 0.5, itself
        assert middle["min_third_pmi"] < itself["min_third_pmi"] - 0.5, (itself, middle)
