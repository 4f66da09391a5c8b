"""The text normal form's quick check (tasks/text_norm.py): a text that the compiled scan
passes is left as it is, so normalize_texts must equal unicodedata.normalize (then LF line
ends) on every text, for every form: real texts of every shared corpus, generated texts
built from the characters that make normalization hard, and every character of the
quick-check set itself. The generated ranges module must be what its script makes."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import scripts.gen_text_norm_ranges as gen
from tasks import text_norm, text_norm_ranges
from tasks.text_norm import FORMS, active_ranges, normalize_texts, quick_check_ranges, scan_texts
from tests.conftest import SHARED_DATA

# the shared corpora that hold text (near_dup_pairs_exact_jaccard holds only keys, read too)
TEXT_CORPORA = {"cc_web_samples", "code_humaneval", "conversations_hh_rlhf", "dclm_human_quality_dev",
                "redpajama_cc_simplified", "simple_wikipedia", "tinyhelen_leaner_sample",
                "web_pages_readability", "web_pages_scrapinghub"}


def reference(text: str, form: str) -> str:
    """What ingest's normal form is, written without the quick check."""
    if form != "none":
        text = unicodedata.normalize(form, text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def mismatches(texts: list[str], form: str, names: list[str]) -> list[str]:
    out = normalize_texts(pa.array(texts, pa.string()), form).to_pylist()
    return [f"{name} ({form})" for name, t, o in zip(names, texts, out, strict=True) if o != reference(t, form)]


def code_points(ranges) -> list[int]:
    return [c for a, b in ranges for c in range(a, b + 1)]


# -- the ranges ----------------------------------------------------------------------------

def test_the_generated_module_is_what_the_script_makes():
    """render() also refuses ranges that miss a character CPython's own quick check does not
    pass (cpython_quick_check_misses)."""
    if unicodedata.unidata_version == text_norm_ranges.UNIDATA_VERSION:
        assert gen.TARGET.read_text() == gen.render(), "run python scripts/gen_text_norm_ranges.py"
    for form in FORMS:
        # on another Unicode version the process computes the ranges: the same function
        assert active_ranges(form) == tuple(quick_check_ranges(form)), form


def test_every_character_cpythons_quick_check_does_not_pass_is_in_the_ranges():
    for form in FORMS:
        assert text_norm.cpython_quick_check_misses(form, list(active_ranges(form))) == [], form
    # the probe sees what decomposition mappings alone miss: the conjoining Hangul V and T jamo
    nfc = list(active_ranges("NFC"))
    without_jamo = [(a, b) for a, b in nfc if not (0x1161 <= a <= 0x11C2)]
    missed = text_norm.cpython_quick_check_misses("NFC", without_jamo)
    assert missed == list(range(0x1161, 0x1176)) + list(range(0x11A8, 0x11C3))
    assert normalize_texts(pa.array(["\u1100\u1161", "\uac00\u11a8"]), "NFC").to_pylist() == ["\uac00", "\uac01"]


def test_a_process_on_another_unicode_version_computes_the_ranges(monkeypatch):
    texts = ["e\u0301", "\u1100\u1161", "caf\u00e9", "\ufb01", "plain"]
    monkeypatch.setattr(text_norm_ranges, "UNIDATA_VERSION", "0.0.0")
    monkeypatch.setattr(text_norm_ranges, "RANGES", {})  # a stale table must not be read
    active_ranges.cache_clear()
    try:
        for form in ("NFC", "NFKC"):
            assert active_ranges(form) == tuple(quick_check_ranges(form))
            assert normalize_texts(pa.array(texts), form).to_pylist() == [reference(t, form) for t in texts]
    finally:
        monkeypatch.undo()
        active_ranges.cache_clear()
    assert active_ranges("NFC") is text_norm_ranges.RANGES["NFC"]


def test_every_character_of_the_set_alone_and_after_a_letter():
    for form in FORMS:
        chars = [chr(c) for c in code_points(active_ranges(form))]
        texts = chars + ["a" + c for c in chars] + ["\uac00" + c for c in chars]
        names = [f"U+{ord(t[-1]):04X} {kind}" for kind in ("alone", "after a", "after \uac00") for t in chars]
        assert mismatches(texts, form, names) == []
        assert scan_texts(pa.array(texts), form)[0].all(), form


def test_a_text_of_every_character_outside_the_set_is_normal_and_passes():
    for form in FORMS:
        covered = np.zeros(0x110000, dtype=bool)
        for a, b in active_ranges(form):
            covered[a:b + 1] = True
        covered[0xD800:0xE000] = True  # surrogates are not UTF-8
        rest = "".join(map(chr, np.flatnonzero(~covered).tolist()))
        assert unicodedata.normalize(form, rest) == rest, form
        assert not scan_texts(pa.array([rest]), form)[0].any(), form
        # and split into texts of 1,000 characters, each after a letter
        pieces = ["a" + rest[k:k + 1000] for k in range(0, len(rest), 1000)]
        assert not scan_texts(pa.array(pieces), form)[0].any(), form
        assert normalize_texts(pa.array(pieces), form).to_pylist() == [p.replace("\r", "\n") for p in pieces]


# -- real texts ----------------------------------------------------------------------------

def _shared_texts() -> dict[str, tuple[list[str], list[str]]]:
    """Every string value of every Parquet and JSONL file of the shared data, by corpus:
    (texts, the name of each: file, column and row)."""
    corpora: dict[str, tuple[list[str], list[str]]] = {}
    for path in sorted(SHARED_DATA.rglob("*")):
        name = path.relative_to(SHARED_DATA)
        texts, names = corpora.setdefault(name.parts[0], ([], []))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for col in table.column_names:
                if pa.types.is_string(table.schema.field(col).type) or pa.types.is_large_string(table.schema.field(col).type):
                    for row, value in enumerate(table.column(col).to_pylist()):
                        if value is not None:
                            texts.append(value)
                            names.append(f"{name}:{col}:row {row}")
        elif path.name.endswith((".jsonl", ".jsonl.zst")):
            data = path.read_bytes()
            if path.suffix == ".zst":
                data = zstandard.ZstdDecompressor().stream_reader(data).read()
            for line_no, line in enumerate(data.decode("utf-8").splitlines(), 1):
                if line.strip():
                    for key, value in json.loads(line).items():
                        if isinstance(value, str):
                            texts.append(value)
                            names.append(f"{name}:{key}:line {line_no}")
    return {k: v for k, v in corpora.items() if v[0]}


def test_every_text_of_every_shared_corpus_and_its_decomposition():
    corpora = _shared_texts()
    assert set(corpora) >= TEXT_CORPORA, f"shared corpora missing: {TEXT_CORPORA - set(corpora)}"
    flagged = 0
    for corpus, (texts, names) in corpora.items():
        # their NFD forms too, so that the composing forms have texts to change
        every = texts + [unicodedata.normalize("NFD", t) for t in texts]
        every_name = names + [f"{n} (as NFD)" for n in names]
        for form in (*FORMS, "none"):
            bad = mismatches(every, form, every_name)
            assert not bad, f"{corpus}: {len(bad)} texts differ from unicodedata, first {bad[:5]}"
        flagged += int(scan_texts(pa.array(texts), "NFC")[0].sum())
    # the quick check lets real text through: most non-ASCII texts are not sent to Python
    non_ascii = sum(not t.isascii() for texts, _ in corpora.values() for t in texts)
    assert flagged < non_ascii / 2, (flagged, non_ascii)


# -- generated texts -----------------------------------------------------------------------

_HARD = (
    [chr(c) for c in range(0x300, 0x370)]  # combining diacritics (ccc 202-240)
    + [chr(c) for c in (0x0591, 0x05B0, 0x05B8, 0x05BC, 0x05C1, 0x05C2, 0x0F71, 0x0F72, 0x0F74, 0x0F80,
                        0x1DC0, 0x20D0, 0x302A, 0x3099, 0x309A, 0x1D165, 0x1D16D)]  # other marks, in all orders
    + [chr(c) for c in (0x1100, 0x1112, 0x1161, 0x1175, 0x11A8, 0x11C2, 0x11C3, 0x1176, 0x115F, 0x1160)]  # jamo
    + ["\uac00", "\uac01", "\ud7a3", "\ub098", "\u3131", "\u314f", "\uffa1"]  # syllables, compatibility jamo
    + [chr(c) for c in (0x0958, 0x095F, 0x09DC, 0x0A33, 0x0F43, 0xFB1D, 0xFB2A, 0x2ADC, 0x1D15E, 0x1D1BB)]  # exclusions
    + [chr(c) for c in (0x0340, 0x0341, 0x0343, 0x0374, 0x037E, 0x0387, 0x1F71, 0x1FEE, 0x2000, 0x2126,
                        0x212A, 0x212B, 0x2329, 0xF900, 0xFA10, 0x2F800)]  # singletons
    + [chr(c) for c in (0x0344, 0x0F73, 0x0F75, 0x0F81)]  # non-starter decompositions
    + [chr(c) for c in (0x0B3E, 0x0B47, 0x0B56, 0x0BBE, 0x0BC6, 0x0CBF, 0x0CC2, 0x0CD5, 0x0D3E, 0x0D46,
                        0x102E, 0x1025, 0x1B05, 0x1B35, 0x11127, 0x11131, 0x1133E, 0x11347)]  # Maybe starters
    + ["\U0001f600", "\U0001f469", "\U0001f3fd", "\u200d", "\ufe0f", "\u20e3", "\U0001f1fa", "\U0001f1f8",
       "\u2764", "\U000e0067", "\U000e007f"]  # emoji, ZWJ, selectors, keycap, flags, tags
    + ["\ufb01", "\u00b2", "\uff21", "\u2460", "\u00a0", "\u1e9b", "\u2fd5", "\u3250", "\U0001d400"]  # compatibility
    + ["\u00c5", "\u00e9", "\u1e08", "\u1ea0", "\u01d5", "\u0226", "\u03d3"]  # precomposed
    + list("AaEeOoUu \r\n\t.") + ["\u2019", "\u201c", "\u00e0", "\u4e2d"]  # ordinary text
)
_CHAR = st.one_of(st.sampled_from(_HARD), st.characters(exclude_categories=("Cs",)))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_CHAR, max_size=30).map("".join), min_size=1, max_size=12))
def test_generated_texts_normalize_as_unicodedata(texts):
    for form in FORMS:
        assert mismatches(texts, form, [repr(t) for t in texts]) == []


def test_every_pair_of_the_hard_characters():
    pairs = [a + b for a in _HARD for b in _HARD]
    for form in FORMS:
        assert mismatches(pairs, form, [f"U+{ord(p[0]):04X} U+{ord(p[1]):04X}" for p in pairs]) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(st.sampled_from("ab\r\n\u00e9\u0301"), max_size=40), min_size=1, max_size=20),
       st.integers(0, 5))
def test_sliced_and_chunked_columns(texts, cut):
    """The scan reads Arrow's buffers: offsets into a slice, chunks, and the 8-byte words
    whose alignment differs from text to text."""
    arr = pa.array(["x" * cut] + texts, pa.string()).slice(1)
    assert normalize_texts(arr, "NFC").to_pylist() == [reference(t, "NFC") for t in texts]
    large = pa.array(texts, pa.large_string())
    assert normalize_texts(large, "NFD").to_pylist() == [reference(t, "NFD") for t in texts]
    chunked = pa.chunked_array([pa.array(texts[:1]), pa.array(texts[1:], pa.string())])
    maybe, cr = scan_texts(chunked, "NFC")
    assert maybe.tolist() == ["\u0301" in t for t in texts]  # the only character of the set there
    assert cr == any("\r" in t for t in texts)


def test_carriage_returns_in_whole_words_and_between_multibyte_characters():
    texts = ["abcdefg\r" * 4, "\u00e9\r\u00e9", "x" * 64, "\r", "", "a\r\n" + "b" * 20]
    for form in ("NFC", "none"):
        assert normalize_texts(pa.array(texts), form).to_pylist() == [reference(t, form) for t in texts]
    assert scan_texts(pa.array(["x" * 64, "\u00e9" * 9]), "NFC")[1] is False


@pytest.mark.parametrize("raw", [b"ab\xe2", b"\xff", b"\x80abc", b"a\xf0\x9f\x98", b"abcdefgh\xc3"])
def test_truncated_or_stray_bytes_are_left_for_the_decoder(raw):
    """Ingest checks UTF-8 before this (the scan assumes valid UTF-8); a value cut inside a
    sequence or holding a stray byte is flagged (never read past) and its conversion to a
    Python string fails as it did before the quick check."""
    arr = pa.array([b"ok", raw], pa.binary()).view(pa.string())
    assert scan_texts(arr, "NFC")[0].tolist() == [False, True]
    with pytest.raises(UnicodeDecodeError):
        normalize_texts(arr, "NFC")


def test_nothing_to_scan():
    assert normalize_texts(pa.array([], pa.string()), "NFC").to_pylist() == []
    assert normalize_texts(pa.array(["", "a"]), "NFKC").to_pylist() == ["", "a"]
    assert scan_texts(pa.array(["\u0301"]), "none")[0].tolist() == [False]
    with pytest.raises(ValueError, match="unknown normal form"):
        quick_check_ranges("NFX")


def test_the_generator_script_says_when_the_module_is_stale(tmp_path, monkeypatch):
    text = gen.render()
    monkeypatch.setattr(gen, "render", lambda: text)  # rendered once: it scans every code point
    stale = tmp_path / "text_norm_ranges.py"
    stale.write_text(text.replace("(0x0300, 0x034E)", "(0x0300, 0x034D)"))
    monkeypatch.setattr(gen, "TARGET", stale)
    monkeypatch.setattr("sys.argv", ["gen", "--check"])
    with pytest.raises(SystemExit):
        gen.main()
    monkeypatch.setattr("sys.argv", ["gen"])
    gen.main()
    assert stale.read_text() == text
    monkeypatch.setattr("sys.argv", ["gen", "--check"])
    gen.main()  # up to date: no exit
