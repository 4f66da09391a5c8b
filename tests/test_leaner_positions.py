"""A rewrite whose start, middle or end is another text (issue 17's "replaces half of the
text"): the lemma chain's position-free measures (tasks/leaner/fidelity.py) and the sentence
vectors (tasks/leaner/vectors.py) that the content decision uses, on real TinyHelen pairs.
How far they take the whole validator is the nested estimate (test_leaner.py)."""

from __future__ import annotations

import random
import statistics

import pytest

from tasks.leaner import vectors
from tasks.leaner.fidelity import align, run_excess, worst_window
from tests.corpora import positional_corrupted, replaced_parts, tinyhelen_pairs


@pytest.fixture(scope="module")
def pairs():
    return tinyhelen_pairs()


def test_a_replaced_start_or_middle_leaves_the_worst_stretch_uncovered(pairs):
    """Each of 40 real originals, handed back as its own rewrite and with its first half or
    middle third replaced by another original's words: the replaced versions leave a third of
    the original nearly uncovered, a much worse least-covered third of the rewrite and a longer
    uncovered run, wherever the replaced part sits."""
    docs = [p for p in pairs if 150 <= len(p["original"].split()) <= 1500][:40]
    assert len(docs) == 40
    worse = {"first_half_replaced": 0, "middle_third_replaced": 0}
    for i, p in enumerate(docs):
        other = docs[(i + 1) % len(docs)]["original"]
        itself = align(p["original"], p["original"])
        # not 1 and 0: lemmas too frequent to place (fidelity.MAX_OCCURRENCES) stay off the chain
        assert itself.rewrite_worst >= 0.6 and itself.rewrite_run <= 0.15, itself
        for kind, text in replaced_parts(p["original"], other).items():
            got = align(p["original"], text)
            worse[kind] += got.original_worst < 0.3 and got.rewrite_worst <= itself.rewrite_worst - 0.4 \
                and got.rewrite_run >= itself.rewrite_run + 0.1
    assert all(n >= 36 for n in worse.values()), worse


def test_worst_window_and_run_do_not_depend_on_position():
    weights = [1.0] * 90
    for start in (0, 30, 60):
        aligned = {i for i in range(90) if not start <= i < start + 30}
        assert worst_window(weights, aligned) == pytest.approx(0.0)
        # a third uncovered in a text two-thirds covered: the run is that third, over 2/3
        assert run_excess(weights, aligned) == pytest.approx((30 / 90) * (2 / 3) / (2 / 3) * 1.0)
    assert worst_window(weights, set(range(90))) == 1.0 and run_excess(weights, set(range(90))) == 0.0
    assert worst_window([0.0] * 5, set()) == 0.0 == run_excess([], set())


def test_sentence_vectors_know_a_paraphrase_from_another_text():
    """WordLlama's table from the installed wheel (no download): a paraphrase is closer than
    an unrelated sentence that shares no more words."""
    near = vectors.features("The volcano erupted and lava flowed down the mountain.",
                            "Hot melted rock came out of the mountain when it blew up.")
    far = vectors.features("The volcano erupted and lava flowed down the mountain.",
                           "The company reported higher profits this quarter.")
    assert len(near) == len(vectors.FEATURES) == 5
    assert near[0] > far[0] + 0.3
    buy = vectors.features("You can buy tickets online.", "Tickets may be purchased via the website.")[0]
    assert buy > vectors.features("You can buy tickets online.", "The cat sat on the mat and slept.")[0] + 0.4


def test_a_replaced_part_of_a_real_rewrite_is_the_worst_window_wherever_it_is(pairs):
    """For every reference of the sample against the same rewrite with its first half, middle
    third or a random run replaced by a same-genre document's rewrite: the replaced version's
    worst window is further from the original and from the rest of the rewrite in most
    documents, and about as often for each position (the measure does not know where the
    corruption is). The references paraphrase, so this is a tendency, not a rule."""
    idx = [i for i in range(len(pairs))]
    random.Random(3).shuffle(idx)
    sample = sorted(idx[:150])
    parts = positional_corrupted(pairs)
    at = vectors.FEATURES.index("vec_rewrite_sum")
    lower = {kind: 0 for kind in parts[0]}
    gap = {kind: [] for kind in parts[0]}
    for i in sample:
        ref = vectors.features(pairs[i]["original"], pairs[i]["rewrite"])[at]
        for kind, text in parts[i].items():
            got = vectors.features(pairs[i]["original"], text)[at]
            lower[kind] += got < ref
            gap[kind].append(ref - got)
    print({k: (v / len(sample), round(statistics.median(gap[k]), 3)) for k, v in lower.items()})
    assert all(v >= 0.8 * len(sample) for v in lower.values()), lower
    medians = [statistics.median(g) for g in gap.values()]
    assert min(medians) > 0.5 * max(medians), medians


def test_a_missing_table_is_a_clear_error(monkeypatch):
    vectors.load.cache_clear()
    monkeypatch.setattr(vectors, "_TABLE", ("weights", "no_such_table.safetensors"))
    try:
        with pytest.raises(RuntimeError, match="no_such_table.safetensors: missing from the installed wordllama"):
            vectors.load()
    finally:
        vectors.load.cache_clear()


def test_sentence_vectors_of_long_and_empty_texts(monkeypatch):
    """Vectors are gathered in blocks, so a long text's figures do not depend on the block size
    (and its memory does not grow with its length); an empty or wordless text gives zeros."""
    text = " ".join(p["rewrite"] for p in tinyhelen_pairs()[:60])
    other = " ".join(p["rewrite"] for p in tinyhelen_pairs()[60:90])
    whole = vectors.features(other, text)
    monkeypatch.setattr(vectors, "BLOCK", 7)
    assert vectors.features(other, text) == whole
    assert vectors.features("", "") == [0.0] * 5
    assert vectors.features("The cat sat on the mat.", "")[0] == 0.0


def test_loading_the_table_leaves_the_process_alone():
    """In a fresh interpreter, as a Ray worker is: the wordllama package itself is never
    imported (its __init__ runs logging.basicConfig(level=INFO) on the root logger and its
    WordLlama class evaluates Path.home(), which raises without HOME and a passwd entry)."""
    import subprocess
    import sys

    code = ("import logging, sys\n"
            "from tasks.leaner import vectors\n"
            "vectors.features('The volcano erupted.', 'Hot rock came out of the mountain.')\n"
            "root = logging.getLogger()\n"
            "print('wordllama' in sys.modules, len(root.handlers), root.level)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0", str(30)], out.stdout + out.stderr
