"""The position-free chain measures of the NOT SHIPPED experiment
scripts/experiment_leaner_positional.py (issue 17's positional blind spot, docs/leaner.md):
the code behind its recorded figures works on real originals. Whether they suffice for the
paraphrased references is what the experiment's results file answers (they do not yet)."""

from __future__ import annotations

import pytest

from tests.corpora import tinyhelen_pairs


@pytest.fixture(scope="module")
def experiment():
    import scripts.experiment_leaner_positional as exp

    return exp


def test_a_replaced_start_or_middle_leaves_the_worst_stretch_uncovered(experiment):
    """Each of 40 real originals, handed back as its own rewrite and with its first half or
    middle third replaced by another original's words: the replaced versions leave a third of
    the original nearly uncovered, a much worse least-covered third of the rewrite and a longer
    uncovered run, wherever the replaced part sits (the shipped half shares see neither
    position). The rewrite-side measures are weaker than the original-side one: the window
    holds a third of the rewrite's weight, which the replaced words (capitalized ones count
    for nothing) need not fill, and chance matches inside the replaced part shorten the run."""
    pairs = [p for p in tinyhelen_pairs() if 150 <= len(p["original"].split()) <= 1500][:40]
    assert len(pairs) == 40
    at = {name: i for i, name in enumerate(experiment.EXTRA)}
    worse = {"first_half_replaced": 0, "middle_third_replaced": 0}
    for i, p in enumerate(pairs):
        other = pairs[(i + 1) % len(pairs)]["original"]
        itself = experiment.extra_features(p["original"], p["original"])
        # not 1 and 0: lemmas too frequent to place (fidelity.MAX_OCCURRENCES) stay off the chain
        assert itself[at["rewrite_worst"]] >= 0.6 and itself[at["rewrite_run"]] <= 0.15, itself
        for kind, text in experiment.replaced(p["original"], other).items():
            got = experiment.extra_features(p["original"], text)
            worse[kind] += got[at["original_worst"]] < 0.3 \
                and got[at["rewrite_worst"]] <= itself[at["rewrite_worst"]] - 0.4 \
                and got[at["rewrite_run"]] >= itself[at["rewrite_run"]] + 0.1
    assert all(n >= 36 for n in worse.values()), worse


def test_worst_window_and_run_do_not_depend_on_position(experiment):
    weights = [1.0] * 90
    for start in (0, 30, 60):
        aligned = {i for i in range(90) if not start <= i < start + 30}
        assert experiment.worst_window(weights, aligned) == pytest.approx(0.0)
        # a third uncovered in a text two-thirds covered: the run is that third, over 2/3
        assert experiment.run_excess(weights, aligned) == pytest.approx((30 / 90) * (2 / 3) / (2 / 3) * 1.0)
