"""Decontamination against HumanEval, injected into the real shared corpora."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.decontam.config import DecontamConfig
from tasks.decontam.core import DecontamError, attribute_names, decontaminate, load_indexes
from tasks.storage import StorageSpec
from tests.conftest import shared

HUMANEVAL = "code_humaneval/code_humaneval.parquet"
# every real text column of the shared corpora that has nothing to do with HumanEval
REAL = [
    ("cc_web_samples/cc_web_samples.parquet", "text"),
    ("simple_wikipedia/simple_wikipedia.parquet", "text"),
    ("conversations_hh_rlhf/conversations_hh_rlhf.parquet", "chosen"),
    ("dclm_human_quality_dev/dclm_human_quality_dev.parquet", "text"),
    ("redpajama_cc_simplified/redpajama_cc_simplified.parquet", "original"),
    ("web_pages_readability/web_pages_readability.parquet", "main_text"),
    ("web_pages_scrapinghub/web_pages_scrapinghub.parquet", "page_text"),
]


def _cfg(mode: str = "drop", **over) -> DecontamConfig:
    spec = {"name": "humaneval", "url": str(shared(HUMANEVAL)), "columns": ["prompt", "canonical_solution"],
            "id_column": "task_id", **over}
    return DecontamConfig(eval_sets=[spec], mode=mode)


def _real_texts() -> list[str]:
    out = []
    for f, col in REAL:
        out += [t for t in pq.read_table(shared(f), columns=[col]).column(col).to_pylist() if t and t.strip()]
    return out


def _inject(host: str, payload: str, rng: random.Random) -> tuple[str, int, int]:
    """``payload`` inserted at a line or word boundary of ``host``: (text, start, end)."""
    cuts = [i for i, c in enumerate(host) if c in " \n"] or [len(host)]
    at = rng.choice(cuts)
    text = host[:at] + "\n" + payload + "\n" + host[at:]
    return text, at + 1, at + 1 + len(payload)


@pytest.fixture(scope="module")
def corpus():
    """The real corpora with every HumanEval task injected into one random document, in
    three spellings: verbatim, re-indented with different whitespace, and upper-cased."""
    rng = random.Random(20)
    texts = _real_texts()
    he = pq.read_table(shared(HUMANEVAL)).to_pylist()
    hosts = rng.sample(range(len(texts)), len(he))
    truth = {}
    for k, (row, h) in enumerate(zip(he, hosts, strict=True)):
        payload = row["prompt"] + row["canonical_solution"]
        if k % 3 == 1:
            payload = "\n".join("  " + " ".join(line.split()) for line in payload.splitlines())
        elif k % 3 == 2:
            payload = payload.upper()
        original = texts[h]
        texts[h], start, end = _inject(original, payload, rng)
        truth[h] = (row["task_id"], original)
    return texts, truth


@pytest.fixture(scope="module")
def index():
    return load_indexes(_cfg(), None)


def test_every_injected_copy_is_caught_with_its_task_and_nothing_else(corpus, index):
    texts, truth = corpus
    res = decontaminate(pa.table({"text": pa.array(texts, pa.string())}), index, _cfg())
    dropped = set(np.nonzero(~res.keep)[0].tolist())
    assert dropped == set(truth), (f"missed {sorted(set(truth) - dropped)[:5]}, "
                                   f"unrelated flagged {sorted(dropped - set(truth))[:5]}")
    names = attribute_names()
    tasks = res.attributes[names["task"]].to_pylist()
    ambiguous = 0
    for h, (task_id, _) in truth.items():
        # tasks whose normalized text is the same (HumanEval/56 and /61) are all named
        assert task_id in tasks[h].split(","), (task_id, tasks[h])
        ambiguous += "," in tasks[h]
        assert res.reasons[h].startswith(f"contaminated humaneval ({tasks[h]}, ")
        assert json.loads(res.details[h])["benchmark"] == "humaneval"
    assert ambiguous <= 4
    assert res.figures["sets"]["humaneval"]["docs"] == len(truth)
    shares = np.asarray(res.attributes[names["share"]].to_pylist())
    assert (shares[sorted(truth)] > 0).all() and (shares[[i for i in range(len(texts)) if i not in truth]] == 0).all()


def test_cut_mode_removes_exactly_the_injected_copy(corpus, index):
    texts, truth = corpus
    cfg = _cfg("cut")
    res = decontaminate(pa.table({"text": pa.array(texts, pa.string())}), index, cfg)
    new = res.new_text.to_pylist()
    assert res.keep.all()  # every host has text of its own left
    left_over, payload_words = 0, 0
    for h, (_, original) in truth.items():
        # the host's own words all stay, in order; of the copy only words in no indexed
        # n-gram (runs of mostly numbers) may stay
        words = iter(new[h].split())
        assert all(w in words for w in original.split()), h
        left_over += len(new[h].split()) - len(original.split())
        payload_words += len(texts[h].split()) - len(original.split())
        spans = res.attributes[attribute_names()["spans"]][h].as_py()
        assert spans and all(texts[h][s["start"]:s["end"]].strip() for s in spans)
    assert left_over <= 0.05 * payload_words, (left_over, payload_words)
    untouched = [i for i in range(len(texts)) if i not in truth]
    assert all(new[i] == texts[i] for i in untouched)
    assert res.figures["docs_cut"] == len(truth)


def test_twelve_words_pass_and_thirteen_are_caught(index):
    from tasks.dedup.minhash import normalize_for_dedup

    he = pq.read_table(shared(HUMANEVAL)).to_pylist()
    host = _real_texts()[0]
    words = normalize_for_dedup(pa.array([he[0]["prompt"]])).to_pylist()[0].split()
    texts = [host + "\n" + " ".join(words[20:20 + k]) + "\n" + host for k in (12, 13)]
    res = decontaminate(pa.table({"text": texts}), index, _cfg())
    assert res.keep.tolist() == [True, False]
    assert res.attributes[attribute_names()["task"]][1].as_py() == "HumanEval/0"


def test_index_is_built_once_and_reused_from_storage(tmp_path):
    storage = StorageSpec(str(tmp_path / "root")).open()
    first = load_indexes(_cfg(), storage)
    assert not first.sets[0].reused and storage.exists(first.sets[0].path)
    second = load_indexes(_cfg(), storage)
    assert second.sets[0].reused and second.sets[0].path == first.sets[0].path
    assert np.array_equal(first.keys, second.keys)
    man = second.manifest()[0]
    assert man["sha256"] in man["index"] and man["ngrams"] == len(first.keys) > 10_000
    # other columns are another index
    other = load_indexes(_cfg(columns=["prompt"]), storage)
    assert other.sets[0].path != first.sets[0].path and len(other.keys) < len(first.keys)


def test_jsonl_eval_set(tmp_path):
    rows = pq.read_table(shared(HUMANEVAL), columns=["task_id", "prompt", "canonical_solution"]).to_pylist()
    path = tmp_path / "he.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = load_indexes(_cfg(url=str(path)), None)
    b = load_indexes(_cfg(), None)
    assert np.array_equal(a.keys, b.keys)


@pytest.mark.parametrize("over, message", [
    ({"url": "/nonexistent/he.parquet"}, "cannot be read"),
    ({"columns": ["prompt", "solution"]}, "no column 'solution'"),
    ({"id_column": "tid"}, "no column 'tid'"),
])
def test_bad_eval_set_fails_naming_it(over, message):
    with pytest.raises(DecontamError) as exc:
        load_indexes(_cfg(**over), None)
    text = str(exc.value)
    assert "'humaneval'" in text and message in text and "\n" not in text


def test_empty_or_unparsable_eval_set_fails(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "canonical_solution": pa.array([], pa.string()),
                             "task_id": pa.array([], pa.string())}), empty)
    with pytest.raises(DecontamError, match="is empty"):
        load_indexes(_cfg(url=str(empty)), None)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("{not json\n")
    with pytest.raises(DecontamError, match="cannot be parsed"):
        load_indexes(_cfg(url=str(junk)), None)
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"prompt": "a b c", "canonical_solution": "d", "task_id": "x"}) + "\n")
    with pytest.raises(DecontamError, match="no row has 13 words"):
        load_indexes(_cfg(url=str(short)), None)


def test_fused_lookup_equals_normalize_then_lookup(index):
    """The one-pass kernel gives what datatrove normalization followed by the plain lookup
    gives, on every real text (which hold non-ASCII tokens, digits and odd whitespace)."""
    from tasks.decontam import kernels
    from tasks.decontam.core import lookup_counts
    from tasks.dedup.minhash import normalize_for_dedup
    from tasks.kernels import utf8_buffers

    he = pq.read_table(shared(HUMANEVAL), columns=["text"]).column("text").to_pylist()
    texts = pa.array(_real_texts() + he + ["ÉTÉ  1,5 x\u00a0y", "", "a"], pa.string())
    data, offsets = utf8_buffers(normalize_for_dedup(texts))
    want = kernels.lookup(data, offsets, index.n, index.keys, index.bits, index.shift)
    got = lookup_counts(texts, index)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert got[0][-len(he) - 3:-3].min() > 0  # every HumanEval text matches itself
