"""Token counts: the bundled Gemma 3 tokenizer (converted to HF tokenizers) against
llama.cpp's own, a tokenizer.json, and tokenizer files that cannot be loaded."""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.tokens as tokens
from tasks.tokens import TokenizerConfig, TokenizerError, count_tokens, load_tokenizer
from tests.conftest import shared

CORPORA = [("cc_web_samples/cc_web_samples.parquet", "text"), ("simple_wikipedia/simple_wikipedia.parquet", "text"),
           ("conversations_hh_rlhf/conversations_hh_rlhf.parquet", "chosen"),
           ("code_humaneval/code_humaneval.parquet", "text"),
           ("web_pages_scrapinghub/web_pages_scrapinghub.parquet", "page_text")]


def _docs(per: int) -> list[str]:
    out = []
    for f, col in CORPORA:
        out += [t for t in pq.read_table(shared(f), columns=[col]).column(col).to_pylist() if t][:per]
    return out


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No tokenizer loaded in this process yet, and an empty conversion cache."""
    monkeypatch.setattr(tokens, "_LOADED", {})
    monkeypatch.setenv("REFINERY_TOKENIZER_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_default_gemma_counts_equal_llama_cpp(fresh):
    docs = _docs(60) + ["> </b>", "a\n\n\n  b", "   leading spaces", "émigré ☃ 数据", ""]
    arr = pa.array(docs + [None], pa.string())
    fast = load_tokenizer()
    assert fast.kind == "gguf/hf" and "gemma3" in fast.name
    ref = load_tokenizer(TokenizerConfig(engine="llama_cpp"))
    got, want = fast.count(arr), ref.count(arr)
    assert got[-1] == 0 and got[-2] == 0
    mismatch = np.nonzero(got != want)[0]
    assert not len(mismatch), [(docs[i][:60], got[i], want[i]) for i in mismatch[:3]]
    assert got.sum() > 100_000
    # BOS is llama.cpp's only added token
    with_bos = load_tokenizer(TokenizerConfig(add_special_tokens=True)).count(arr[:5])
    assert (with_bos == got[:5] + 1).all()
    # loaded once per process
    assert load_tokenizer() is fast
    assert count_tokens(arr[:3]).to_pylist() == got[:3].tolist()


def test_hf_tokenizer_json(tmp_path, fresh):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_docs(100), trainers.BpeTrainer(vocab_size=2000, special_tokens=["[UNK]"], show_progress=False))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    docs = _docs(20)
    loaded = load_tokenizer(TokenizerConfig(url=str(path)))
    assert loaded.kind == "hf"
    assert loaded.count(pa.array(docs)).tolist() == [len(tok.encode(d).ids) for d in docs]


@pytest.mark.parametrize("name, content, message", [
    ("missing.json", None, "cannot be read"),
    ("tokenizer.json", b"{not json", "not a tokenizer.json"),
    ("model.gguf", b"this is no gguf", "not a GGUF file"),
])
def test_bad_tokenizer_file_is_one_line_naming_it(fresh, name, content, message):
    path = fresh / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TokenizerError) as exc:
        load_tokenizer(TokenizerConfig(url=str(path)))
    text = str(exc.value)
    assert str(path) in text and message in text and "\n" not in text


def test_without_llama_cpp_the_default_says_how_to_fix_it(fresh, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as when the llm extra is absent
    with pytest.raises(TokenizerError, match=r"refinery\[llm\].*tokenizer.json"):
        load_tokenizer()


def test_sampled_total_is_close_to_the_exact_one(fresh):
    from tasks.tokens import sample_rows, token_total

    texts = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"), columns=["text"]).column("text")
    exact = token_total(texts)
    assert exact["exact"] and exact["tokens"] == int(load_tokenizer().count(texts).sum())
    est = token_total(texts, TokenizerConfig(sample=0.05))
    assert not est["exact"] and 0.04 * len(texts) < est["sampled_docs"] < 0.06 * len(texts)
    err = abs(est["tokens"] - exact["tokens"]) / exact["tokens"]
    assert err < 0.03 and err < 4 * est["relative_stderr"], (err, est)
    assert sample_rows(10, 0.01).tolist() == [0]


def test_segmented_counts_equal_whole_text_counts(fresh):
    """The default counts distinct pieces once (texts cut where no token can cross); the
    sum per text equals tokenizing each whole text, on every text of the shared corpora."""
    tok = load_tokenizer()
    assert type(tok).__name__ == "_SegmentedTokenizer"
    docs = []
    for f, col in CORPORA + [("dclm_human_quality_dev/dclm_human_quality_dev.parquet", "text"),
                             ("web_pages_readability/web_pages_readability.parquet", "page_text")]:
        docs += [t for t in pq.read_table(shared(f), columns=[col]).column(col).to_pylist() if t]
    docs += ["> </b>", "a> </b> c", "\n\nx", "x\n", "a \n b", "tab\there  two", "a\r\nb", "  ", "\n", "é ☃ 数据 "]
    arr = pa.array(docs + [None, ""], pa.string())
    whole = tokens.Tokenizer.count(tok, arr)  # the converted tokenizer on whole texts
    first = tok.count(arr)
    again = tok.count(arr)  # every piece known now: counts from the process's table
    bad = np.nonzero(first != whole)[0]
    assert not len(bad), [(docs[i][:60], first[i], whole[i]) for i in bad[:3]]
    assert np.array_equal(again, first) and first[-2:].tolist() == [0, 0]
    # a column of several chunks (sliced ones among them) is counted chunk by chunk, not combined
    k = len(docs) // 3
    chunked = pa.chunked_array([arr[:k], arr[k:k + 1], arr[k + 1:]])
    assert np.array_equal(tok.count(chunked), first)
    assert np.array_equal(tok.count(pa.chunked_array([arr])), first)
    assert tok.count(pa.chunked_array([], pa.string())).tolist() == []


def test_piece_counts_are_kept_for_the_next_process(fresh, monkeypatch):
    """A new process (here: an emptied tokenizer registry) starts from the piece counts earlier
    ones saved beside the converted tokenizer: same counts, and the HF tokenizer is not even
    loaded while every piece is known. Many parts are merged into one; a torn part is ignored."""
    docs = [t for t in pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"), columns=["text"])
            .column("text").to_pylist() if t]
    arr = pa.array(docs, pa.string())
    first = load_tokenizer()
    assert first._stored == 0
    want = np.concatenate([first.count(arr[:100]), first.count(arr[100:])])
    folder = next((fresh / "cache").glob(f"*.{tokens.PIECES_SCHEME}-tokenizers-*"))
    # a part per call, and more within a call that learns many pieces (exchanged with other workers)
    assert len(list(folder.glob("*.npz"))) >= 2

    monkeypatch.setattr(tokens._SegmentedTokenizer, "MAX_PARTS", 1)
    tokens._LOADED.clear()
    second = load_tokenizer()
    assert second is not first and second._stored == first._stored
    assert len(list(folder.glob("*.npz"))) == 1  # merged
    assert np.array_equal(second.count(arr), want) and second._inner is None
    assert not second._bpe_loaded  # every piece known: the compiled counter is not even loaded
    # pieces never seen are counted by the compiled BPE as llama.cpp counts them, still
    # without loading the HF tokenizer
    novel = pa.array(["Zyxquorblat fremdwörterbuch 1234567"])
    assert second.count(novel).tolist() == load_tokenizer(TokenizerConfig(engine="llama_cpp")).count(novel).tolist()
    assert second._inner is None and second._bpe is not None  # loaded for the missing pieces

    for part in folder.glob("*.npz"):
        part.write_bytes(part.read_bytes()[:100])
    tokens._LOADED.clear()
    third = load_tokenizer()
    assert third._stored == 0 and np.array_equal(third.count(arr), want)


def test_pieces_learned_in_slices_are_exchanged_and_counts_stay_exact(fresh, monkeypatch):
    """A call that learns many pieces walks the texts in slices, saving what it learned after
    each and taking what other workers saved: the counts equal whole-text tokenization, the
    parts hold each learned piece once, and a second worker (loaded before the first saved
    anything) takes them instead of counting them again."""
    docs = [t for t in pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"), columns=["text"])
            .column("text").to_pylist() if t][:200]
    arr = pa.array(docs, pa.string())
    monkeypatch.setattr(tokens._SegmentedTokenizer, "EXCHANGE_BYTES", 4096)
    monkeypatch.setattr(tokens._SegmentedTokenizer, "EXCHANGE_PIECES", 50)
    first = load_tokenizer()
    tokens._LOADED.clear()
    second = load_tokenizer()  # a second worker, started before the first saved anything
    assert first is not second and first._stored == second._stored == 0
    whole = tokens.Tokenizer.count(first, arr)
    counted = []
    real = tokens._SegmentedTokenizer._count_compiled

    def spy(self, data, offsets, wout):
        before = self._stored
        taken = []
        real_take = self._take_saved

        def take():
            n = self._stored
            got = real_take()
            taken.append(self._stored - n)
            return got

        self._take_saved = take
        out = real(self, data, offsets, wout)
        counted.append((self._stored - before) - sum(taken))
        return out

    monkeypatch.setattr(tokens._SegmentedTokenizer, "_count_compiled", spy)
    assert np.array_equal(first.count(arr), whole)
    folder = next((fresh / "cache").glob(f"*.{tokens.PIECES_SCHEME}-tokenizers-*"))
    parts = [np.load(f)["keys"] for f in folder.glob("*.npz")]
    assert len(parts) > 2  # saved slice by slice
    keys = np.concatenate(parts)
    assert len(np.unique(keys)) == len(keys) == first._stored
    assert np.array_equal(second.count(arr), whole)
    assert counted[1] == 0  # the second worker took every piece the first saved


def test_a_worker_takes_what_another_saved_while_it_walks(fresh, monkeypatch):
    """Two workers side by side on a machine's first run: while the second walks its texts,
    the first counts the later half of them and saves its pieces; the second takes those at its
    next exchange, mid-walk, and does not count them again (no piece is saved twice), and both
    count exactly."""
    docs = [t for t in pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"), columns=["text"])
            .column("text").to_pylist() if t][:200]
    arr, later = pa.array(docs, pa.string()), pa.array(docs[100:], pa.string())
    monkeypatch.setattr(tokens._SegmentedTokenizer, "EXCHANGE_BYTES", 4096)
    monkeypatch.setattr(tokens._SegmentedTokenizer, "EXCHANGE_PIECES", 50)
    first = load_tokenizer()
    tokens._LOADED.clear()
    second = load_tokenizer()
    whole_later = tokens.Tokenizer.count(first, later)
    whole = tokens.Tokenizer.count(first, arr)
    taken_mid_walk: list[int] = []
    real_take = second._take_saved
    in_walk = []
    real_count = tokens._SegmentedTokenizer._count_compiled

    def counting(self, data, offsets, wout):
        in_walk.append(self is second)
        try:
            return real_count(self, data, offsets, wout)
        finally:
            in_walk.pop()

    def take() -> bool:
        if in_walk and in_walk[-1] and not taken_mid_walk:
            in_walk.append(False)
            try:  # the other worker, meanwhile: counts the later texts and saves their pieces
                assert np.array_equal(first.count(later), whole_later)
            finally:
                in_walk.pop()
        n = second._stored
        got = real_take()
        if in_walk and in_walk[-1]:
            taken_mid_walk.append(second._stored - n)
        return got

    monkeypatch.setattr(tokens._SegmentedTokenizer, "_count_compiled", counting)
    second._take_saved = take
    assert np.array_equal(second.count(arr), whole)
    assert taken_mid_walk and sum(taken_mid_walk) > 100  # the first worker's pieces, taken mid-walk
    folder = next((fresh / "cache").glob(f"*.{tokens.PIECES_SCHEME}-tokenizers-*"))
    keys = np.concatenate([np.load(f)["keys"] for f in folder.glob("*.npz")])
    assert len(np.unique(keys)) == len(keys)  # none counted by both


def test_bundled_gguf_verified_once_per_cache(fresh):
    """The bundled GGUF's sha256 check runs once; later loads trust a file whose path, size
    and mtime still match the note, and a note that no longer matches is verified again."""
    import json

    path = tokens._bundled_gguf()
    stamp = fresh / "cache" / "bundled-gguf.json"
    seen = json.loads(stamp.read_text())
    assert seen["path"] == path and seen["size"] == os.path.getsize(path)
    assert tokens._bundled_gguf() == path
    stamp.write_text(json.dumps({**seen, "size": 1}))
    assert tokens._bundled_gguf() == path and json.loads(stamp.read_text())["size"] == seen["size"]
    # a note made under another version of the package is not trusted
    stamp.write_text(json.dumps({**seen, "version": "0.0.0"}))
    assert tokens._bundled_gguf() == path and json.loads(stamp.read_text())["version"] == seen["version"] != "0.0.0"


def test_saved_piece_counts_stay_bounded_and_a_read_only_cache_still_counts(fresh, monkeypatch):
    """Saved counts beyond the table's size are dropped on disk too (the folder never grows
    without bound); a cache where nothing can be written still gives exact counts."""
    docs = [t for t in pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"), columns=["text"])
            .column("text").to_pylist() if t][:300]
    arr = pa.array(docs, pa.string())
    want = load_tokenizer().count(arr)
    folder = next((fresh / "cache").glob(f"*.{tokens.PIECES_SCHEME}-tokenizers-*"))
    saved = sum(len(np.load(f)["keys"]) for f in folder.glob("*.npz"))
    assert saved > 100
    monkeypatch.setattr(tokens._SegmentedTokenizer, "MAX_CACHED", saved - 1)
    tokens._LOADED.clear()
    again = load_tokenizer()
    assert again._stored == 0 and not list(folder.glob("*.npz"))  # started over, on disk too
    assert np.array_equal(again.count(arr), want)

    for f in (fresh / "cache").glob("*.glue-*.json"):
        f.unlink()
    real_replace = os.replace

    def refuse(src, dst):
        raise OSError(30, "Read-only file system", dst)

    monkeypatch.setattr(tokens.os, "replace", refuse)
    tokens._LOADED.clear()
    assert np.array_equal(load_tokenizer().count(arr), want)
    monkeypatch.setattr(tokens.os, "replace", real_replace)
    assert not list((fresh / "cache").glob("*.tmp-*")) and not list(folder.glob("*.tmp.npz"))


def test_compiled_bpe_counts_every_piece_as_the_converted_tokenizer(fresh):
    """The compiled counter (token_kernels.piece_counts) against the converted HF tokenizer on
    each piece alone: every distinct piece of two shared corpora plus pieces that reach each
    of its rules (added tokens, the crossing piece, byte fallback, a long unbroken run)."""
    import json

    from tasks import token_kernels
    from tasks.kernels import utf8_buffers

    tok = load_tokenizer()
    assert tok.bpe is not None
    docs = []
    for f, col in [CORPORA[0], CORPORA[3]]:
        docs += [t for t in pq.read_table(shared(f), columns=[col]).column(col).to_pylist() if t]
    edge = [" <b>x</b>", "[multimodal]", " ab<start_of_image>cd", "\t\tx\t", "   \t", "a> </b>c", " > </", ">",
            " 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", " \x00\x01", " " + "qz" * 3000, " ▁x", "x▁▁y", " é", " 数据库", " 🙂🙃"]
    data, offsets = utf8_buffers(pa.array(docs + edge, pa.string()))
    hashes, starts, stops, _ = token_kernels.segments(data, offsets, tok._glue)
    _, first = np.unique(hashes, return_index=True)
    first = np.concatenate([first, np.arange(len(hashes) - 40, len(hashes))])  # the edge texts' pieces
    got = tok.bpe.counts(data, starts[first], stops[first])
    texts = [data[a:b].tobytes().decode("utf-8") for a, b in zip(starts[first], stops[first], strict=True)]
    want = tok.inner._count(texts)
    bad = np.nonzero(got != want)[0]
    assert len(texts) > 20_000 and not len(bad), [(texts[i][:40], got[i], want[i]) for i in bad[:5]]

    # a layout the compiled counter does not know leaves the pieces to the HF tokenizer
    spec = json.loads(max((fresh / "cache").glob("*.json"), key=lambda f: f.stat().st_size).read_bytes())
    assert tokens._bpe_arrays(spec) is not None
    assert tokens._bpe_arrays({**spec, "normalizer": None}) is None
    assert tokens._bpe_arrays({**spec, "pre_tokenizer": {**spec["pre_tokenizer"], "behavior": "Removed"}}) is None
    assert tokens._bpe_arrays({**spec, "model": {**spec["model"], "byte_fallback": False}}) is None


def test_piece_keys_are_one_to_one_with_piece_texts(fresh):
    """Every distinct piece of two shared corpora gets its own key and every occurrence of a
    piece the same one, wherever it lies in the buffer (aligned or not, in its last word or
    not): the table can never give one piece another's count."""
    from tasks import token_kernels
    from tasks.kernels import utf8_buffers

    tok = load_tokenizer()
    docs = []
    for f, col in [CORPORA[0], CORPORA[1]]:
        docs += [t for t in pq.read_table(shared(f), columns=[col]).column(col).to_pylist() if t]
    docs += ["x" * n for n in range(1, 20)] + [" abcdefghij" * 3, "short end"]
    data, offsets = utf8_buffers(pa.array(docs, pa.string()))
    keys, starts, stops, _ = token_kernels.segments(data, offsets, tok._glue)
    texts = [data[a:b].tobytes() for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]
    by_key: dict[int, bytes] = {}
    for k, t in zip(keys.tolist(), texts, strict=True):
        assert by_key.setdefault(k, t) == t, (k, t, by_key[k])
    assert len(by_key) == len(set(texts)) > 10_000
    # the same piece shifted by one byte (another alignment of its words) keys the same
    shifted, offs = utf8_buffers(pa.array(["." + d for d in docs[-25:]], pa.string()))
    k2, s2, e2, _ = token_kernels.segments(shifted, offs, tok._glue)
    known = {t: k for k, t in by_key.items()}
    again = [(k, shifted[a:b].tobytes()) for k, a, b in zip(k2.tolist(), s2.tolist(), e2.tolist(), strict=True)]
    assert sum(t in known for _, t in again) > 20
    assert all(known[t] == k for k, t in again if t in known)
    # a buffer that does not start 8-byte aligned is copied to one that does: same keys, and
    # the same compiled walk (a second version would compile for 10-20 s in every new worker)
    raw = np.empty(len(data) + 1, np.uint8)
    raw[1:] = data
    assert raw[1:].ctypes.data % 8
    assert np.array_equal(token_kernels.segments(raw[1:], offsets, tok._glue)[0], keys)
    assert len(token_kernels.count_texts.signatures) == 1


def test_words_counted_in_the_walk_equal_word_counts(fresh):
    """The walk's whitespace words (one pass for both counts, as ingest uses it) equal
    ``word_counts`` on real texts and on every kind of whitespace ``str.split`` knows, and its
    tokens equal ``count``'s, whichever path counts them (listing, learning, all known)."""
    from tasks.kernels import word_counts

    spaces = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    edge = [f"a{s}b{s}{s}c" for s in spaces] + [s + "x" for s in spaces] + ["x" + s for s in spaces] + [
        spaces, "", " ", "’quoted’ “text” — dash", "\u00a0lead", "tail\u3000", "a\u200bb", "\u2028", "x\x1cy",
        "é\u2009è", "\u0085", "e\u0301 \u00c2"]
    docs = _docs(80) + edge
    arr = pa.array(docs + [None], pa.string())
    tok = load_tokenizer()
    want_words = word_counts(arr)
    assert want_words.to_pylist()[:len(docs)] == [len(d.split()) for d in docs]
    first_tokens, first_words = tok.count_and_words(arr)  # a fresh cache: learns every piece
    assert first_words.equals(want_words)
    assert first_words.null_count == 1
    again_tokens, again_words = tok.count_and_words(arr)  # every piece known now
    assert again_words.equals(want_words)
    assert np.array_equal(first_tokens, tok.count(arr)) and np.array_equal(again_tokens, first_tokens)
    later = tokens._gguf(None, False, "hf")  # a later process: starts from the saved parts
    later_tokens, later_words = later.count_and_words(pa.chunked_array([arr[:50], arr[50:]]))
    assert later_words.to_pylist() == want_words.to_pylist() and np.array_equal(later_tokens, first_tokens)
    assert first_tokens.sum() > 10_000 and (first_tokens[:len(docs)][np.array([bool(d) for d in docs])] > 0).all()
