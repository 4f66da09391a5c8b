"""The NOT SHIPPED session-12 experiment scripts/experiment_leaner_first_half.py (issue 17: a
replaced first half as a binding target, docs/leaner.md): its variants train on the kinds
they name and still measure every kind, and its unsigned imbalances see a replaced half at
either end. The figures themselves are in bench/results/leaner_first_half_s12_not_shipped.json."""

from __future__ import annotations

import pytest

from tests.corpora import tinyhelen_pairs

pytestmark = pytest.mark.slow  # about 75 s: the experiment's features over real pairs


@pytest.fixture()
def experiment():
    """The experiment module; it repoints the training script's globals, which are put back."""
    import scripts.experiment_leaner_first_half as exp
    import scripts.experiment_leaner_positional as P
    import scripts.train_leaner_content_model as T
    import tasks.leaner.content_model as CM

    names = ("KINDS", "TARGETS", "NEAR_VERBATIM", "score", "_scored", "_fit_lr")
    saved = {n: getattr(T, n) for n in names}
    features, patched = CM.FEATURES, hasattr(P, "_patched")
    # the experiment caches its longer feature vectors under the same keys as the shipped ones
    cache = dict(T._cache)
    try:
        yield exp
    finally:
        for n, v in saved.items():
            setattr(T, n, v)
        T._cache.clear()
        T._cache.update(cache)
        CM.FEATURES = features
        if not patched and hasattr(P, "_patched"):
            del P._patched


def test_a_variant_trains_on_its_kinds_and_judges_all(experiment):
    """30 real pairs: leaving the middle third out of training removes exactly the middle
    thirds that pass the earlier checks from the negatives, and the middle third is judged
    either way (measured, not binding: its target is 0)."""
    import scripts.train_leaner_content_model as T

    pairs = tinyhelen_pairs()[:30]
    experiment.use("span_dropped")
    rows = T.score(pairs)
    with_middle = T._fit_lr(rows, None, 1.0)
    experiment.use("middle_untrained")
    without = T._fit_lr(rows, None, 1.0)
    passing = sum(T.early_reason(r, "middle_third_replaced", None) is None for r in rows)
    assert passing >= 20
    assert with_middle["negatives"] - without["negatives"] == passing
    assert with_middle["positives"] == without["positives"]
    judged = T.judged(rows, T.with_threshold(without, 0.05))
    assert set(judged) >= {"first_half_replaced", "middle_third_replaced", "span_replaced"}
    assert T.TARGETS["middle_third_replaced"] == 0.0 and T.TARGETS["first_half_replaced"] == 0.95


def test_unsigned_imbalance_sees_a_replaced_half_at_either_end(experiment):
    """Real originals handed back as their own rewrite with the first or the second half
    replaced by another original's words: the signed rewrite imbalance points opposite ways,
    the unsigned one is larger than the untouched copy's for both in most documents."""
    import scripts.experiment_leaner_positional as P
    import scripts.train_leaner_content_model as T

    pairs = [p for p in tinyhelen_pairs() if 150 <= len(p["original"].split()) <= 1500][:30]
    names = [n for n, _ in P.SHIPPED_FEATURES] + [n for n, _ in experiment.UNSIGNED]
    at = names.index("abs_log_second_over_first")
    signed = names.index("log_second_over_first")
    larger, opposite = 0, 0
    for i, p in enumerate(pairs):
        other = pairs[(i + 1) % len(pairs)]["original"]
        first = P.replaced(p["original"], other)["first_half_replaced"]
        second = T._near_verbatim(p["original"], other)["verbatim_second_half_replaced"]
        x = {k: experiment.unsigned_x(P.positional_features(p["original"], t))
             for k, t in (("self", p["original"]), ("first", first), ("second", second))}
        assert all(len(v) == len(names) for v in x.values())
        assert x["first"][at] == pytest.approx(abs(x["first"][signed]))
        opposite += x["first"][signed] > 0 > x["second"][signed]
        larger += x["first"][at] > x["self"][at] and x["second"][at] > x["self"][at]
    assert opposite >= 25 and larger >= 25, (opposite, larger)
