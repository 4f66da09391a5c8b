"""Language ID computed from the lid.176 file by compiled code (tasks.quality.fast.lid) equals
fastText's own ``predict`` (k=1): the same label for every text of ../shared/data and for
generated text, and the same probability; other hierarchical-softmax models read the same way
(quantized with norms, pruned, a short last sub-quantizer) agree too, and models of another
kind are left to fastText."""

from __future__ import annotations

import json
import subprocess
import sys

import fasttext
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.quality import lid
from tasks.quality.fast.lid import compiled_lid, fasttext_hash, predict_prepared, read_model
from tasks.quality.models import lid_model_path, load_fasttext
from tests.conftest import shared
from tests.corpora import SPECIAL_CHARACTERS as SPECIAL
from tests.corpora import shared_texts


def fasttext_top(model, prepared: list[str]) -> tuple[list[str], np.ndarray]:
    labels, probs = model.predict(prepared, k=1)
    return ([lab[0].removeprefix("__label__") if lab else "unknown" for lab in labels],
            np.array([p[0] if len(p) else 0.0 for p in probs], np.float32))


def assert_equal(compiled, model, texts: list[str], where: list[str]) -> float:
    """Same label and the same float32 probability for every text; returns the largest
    probability difference (0.0)."""
    prepared = [lid.prepare(t) for t in texts]
    got_l, got_p = predict_prepared(compiled, prepared)
    want_l, want_p = fasttext_top(model, prepared)
    bad = [i for i, (a, b) in enumerate(zip(got_l, want_l, strict=True)) if a != b]
    assert not bad, f"{where[bad[0]]}: compiled {got_l[bad[0]]} != fastText {want_l[bad[0]]} ({len(bad)} texts)"
    np.testing.assert_array_equal(got_p, want_p)
    return float(np.abs(got_p.astype(np.float64) - want_p).max()) if texts else 0.0


@pytest.fixture(scope="module")
def lid176():
    path = lid_model_path(None)
    compiled = compiled_lid(path)
    assert compiled is not None, "the compiled reader must take lid.176"
    return compiled, load_fasttext(path)


def test_every_shared_text_equal(lid176) -> None:
    compiled, model = lid176
    texts, where = shared_texts()
    assert len(texts) > 10_000
    diff = assert_equal(compiled, model, texts, where)
    assert diff == 0.0, f"largest probability difference {diff}: not fastText's float32 arithmetic any more"
    # the texts are of many languages and confidences: a comparison of constants would prove nothing
    langs, probs = predict_prepared(compiled, [lid.prepare(t) for t in texts])
    assert len(set(langs)) >= 10 and probs.min() < 0.3 and probs.max() > 0.99


def test_lid_predict_engines_agree_on_shared_texts(lid176) -> None:
    texts, _ = shared_texts()
    texts = texts[::10]
    got, want = lid.predict(texts), lid.predict(texts, engine="fasttext")
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="lid engine 'fast'"):
        lid.predict(texts, engine="fast")


# every way fastText reads a line: each of its white space bytes, the end-of-line token as a
# word (it ends the line), label-like words (no row at all), words of the dictionary, scripts of
# 1-4 UTF-8 bytes a character, emoji, combining marks, and words long enough for many n-grams
WORDS = ["</s>", "__label__en", "__label__", "__label__xx", "x__label__", "\x00", " ", "\t", "\x0b", "\x0c", "\r",
         "\x85", "\xa0", "\u3000", "\u2028", "the", "und", "les", "это", "的", "في", "😀", "👍🏽", "e\u0301",
         "ñ", "Straße", "antidisestablishmentarianism" * 3, "a" * 300, "ÿ" * 40, "<", ">", "<s>", "</s>x"]
TEXT = st.lists(st.lists(st.one_of(st.sampled_from(WORDS + [s for s in SPECIAL if s != "\ud800"]),
                                   st.characters(exclude_categories=("Cs",)),
                                   st.text(st.characters(exclude_categories=("Cs",)), max_size=8)),
                         max_size=40).map("".join), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(TEXT)
def test_generated_text_equal(lid176, texts: list[str]) -> None:
    compiled, model = lid176
    assert_equal(compiled, model, texts, [repr(t) for t in texts])


def test_fixed_lines_equal(lid176) -> None:
    """The reading rules one by one: a literal ``</s>`` ends the line, NUL splits words, a
    label-like word counts for nothing, an empty line is its end-of-line token alone."""
    compiled, model = lid176
    texts = ["", " ", "\x00", "</s>", "Das ist gut </s> this is good", "this is good </s> Das ist gut",
             "Das\x00ist\x00gut", "__label__de Bonjour tout le monde", "Bonjour __label__en tout le monde",
             "</s></s> c'est la vie", "😀😀😀", "ＡＢＣ全角", "x" * 5000]
    assert_equal(compiled, model, texts, texts)
    langs, _ = predict_prepared(compiled, ["Das ist gut </s> this is good", "this is good </s> Das ist gut"])
    assert langs == ["de", "en"]  # the words after the marker really are not read


def test_hash_is_fasttexts_with_its_sign_quirk(lid176) -> None:
    """fastText XORs each byte as a signed char: the n-gram rows fastText reports are ours."""
    _, model = lid176
    nwords = len(model.get_words())
    bucket = model.f.getArgs().bucket
    for gram in ["<th", "he>", "ßt", "это", "😀>", "的", "<é"]:
        assert model.get_subword_id(gram) == nwords + fasttext_hash(gram.encode()) % bucket, gram
    # the quirk matters for every byte above 127
    plain = 2166136261
    for b in "é".encode():
        plain = ((plain ^ b) * 16777619) & 0xFFFFFFFF
    assert plain != fasttext_hash("é".encode())


def test_lone_surrogate_is_a_clear_error(lid176) -> None:
    compiled, _ = lid176
    with pytest.raises(ValueError, match="language ID: text 1 .*surrogate"):
        predict_prepared(compiled, ["ok", "a\ud800b"])


def _labelled_lines() -> tuple[list[str], list[str]]:
    t = pq.read_table(shared("cc_web_samples/cc_web_samples.parquet"), columns=["text"])
    texts = [lid.prepare(x) for x in t.column("text").to_pylist()[:600]]
    # many labels (a deep Huffman tree): the first letter of the text's second word
    labels = [(x.split()[1:2] or ["none"])[0][:1].lower() or "none" for x in texts]
    return texts, [f"__label__{lab if lab.isalnum() else 'sym'}" for lab in labels]


# fastText training in this test process (after numba's and fastText's other native code) was
# seen to diverge ("Encountered NaN") at any rate, as tasks.quality.classifier notes: a fresh
# process trains cleanly
_TRAIN_CHILD = """
import json, sys
import fasttext
a = json.loads(sys.argv[1])
model = fasttext.train_supervised(a["input"], thread=1, seed=1, verbose=0, lr=a["lr"], **a["train"])
if a["quantize"] is not None:
    model.quantize(retrain=False, **a["quantize"])
model.save_model(a["output"])
"""


def _train(tmp_path, texts: list[str], labels: list[str], name: str, train: dict, quantize: dict | None) -> None:
    (tmp_path / "train.txt").write_text("".join(f"{lab} {x}\n" for lab, x in zip(labels, texts, strict=True)))
    lr = 0.1
    for _ in range(4):
        args = {"input": str(tmp_path / "train.txt"), "output": str(tmp_path / name), "lr": lr, "train": train,
                "quantize": quantize}
        proc = subprocess.run([sys.executable, "-c", _TRAIN_CHILD, json.dumps(args)], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        assert "NaN" in proc.stderr, proc.stderr[-500:]
        lr /= 2
    pytest.fail(f"fastText training diverged down to lr {lr * 2}")


@pytest.mark.parametrize(("dim", "qnorm", "cutoff"), [(16, False, 0), (15, True, 2000), (12, True, 0)])
def test_other_hierarchical_softmax_models_equal(tmp_path, dim: int, qnorm: bool, cutoff: int) -> None:
    """Models the reader was not written against: trained here with hierarchical softmax and
    character n-grams, quantized with and without norms, pruned (cutoff) or not, with a last
    sub-quantizer shorter than the others (dim 15, dsub 2)."""
    texts, labels = _labelled_lines()
    _train(tmp_path, texts, labels, "m.ftz", {"loss": "hs", "dim": dim, "minn": 2, "maxn": 4, "bucket": 20_000,
                                              "epoch": 3}, {"qnorm": qnorm, "cutoff": cutoff, "dsub": 2})
    compiled = read_model(tmp_path / "m.ftz")
    assert compiled is not None and len(compiled.labels) > 10
    reloaded = fasttext.load_model(str(tmp_path / "m.ftz"))
    extra = ["", "</s> a", "__label__a b", "日本語のテキスト", "x" * 300]
    assert_equal(compiled, reloaded, texts + extra, (texts + extra))


def test_other_kinds_are_left_to_fasttext(tmp_path) -> None:
    """A softmax model, or one not quantized, is not read by the compiled path."""
    texts, labels = _labelled_lines()
    _train(tmp_path, texts, labels, "softmax.ftz", {"loss": "softmax", "dim": 16, "minn": 2, "maxn": 4,
                                                    "bucket": 20_000, "epoch": 3}, {"dsub": 2})
    assert read_model(tmp_path / "softmax.ftz") is None
    _train(tmp_path, texts, labels, "hs.bin", {"loss": "hs", "dim": 16, "epoch": 1, "bucket": 1000, "minn": 2,
                                               "maxn": 3}, None)
    assert read_model(tmp_path / "hs.bin") is None


def test_bad_files_are_named(tmp_path) -> None:
    (tmp_path / "not.ftz").write_bytes(b"hello world, not a model")
    with pytest.raises(ValueError, match=r"not\.ftz: not a fastText model"):
        read_model(tmp_path / "not.ftz")
    data = lid_model_path(None).read_bytes()
    for cut in (70, 5000, len(data) // 2, len(data) - 10):  # arguments, dictionary, matrices
        (tmp_path / "cut.ftz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"cut\.ftz: truncated fastText model"):
            read_model(tmp_path / "cut.ftz")


def test_a_full_word_table_still_reads_every_word(lid176, monkeypatch) -> None:
    """With the per-process word table full, new words are read each time, not remembered: the
    predictions stay fastText's."""
    from tasks.quality.fast import lid as compiled_module

    compiled, model = lid176
    compiled.words_seen.clear()
    monkeypatch.setattr(compiled_module, "MAX_WORDS_SEEN", 50)
    texts, where = shared_texts()
    assert_equal(compiled, model, texts[::40], where[::40])
    assert compiled.words_seen.n_seen == 50
    compiled.words_seen.clear()


def test_long_words_are_read_not_remembered(lid176) -> None:
    """A word longer than the table keeps (base64, minified text) is read each time, so a worker's
    table stays bounded; the prediction is still fastText's."""
    compiled, model = lid176
    compiled.words_seen.clear()
    long_word = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 3
    texts = [f"{long_word} hello world", f"hello {long_word} again"]
    assert_equal(compiled, model, texts, texts)
    assert compiled.words_seen.n_seen == 3  # hello, world, again
    compiled.words_seen.clear()


def test_a_newline_is_refused(lid176) -> None:
    """fastText ends a line at a newline; the compiled pass reads prepared (one-line) texts only."""
    compiled, _ = lid176
    with pytest.raises(ValueError, match="text 1 holds a newline"):
        predict_prepared(compiled, ["one line", "two\nlines"])
