"""Issue 19's rejected idea, kept measurable: cut the contents of ``<script>`` and ``<style>``
out of pages' HTML before the extract stage parses them, and see what it gains end to end.

About half a page's characters are scripts and style sheets, which resiliparse's parser stores
only for its extractor to skip. The cut here is a numba kernel over the Arrow column's UTF-8
bytes that follows the HTML tokenizer's states where they decide where a script ends
(comments, quoted attribute values, raw-text and RCDATA elements, escaped script data, SVG /
MathML, where ``<script>`` is markup); wherever it is unsure it copies the bytes as they are.

Measured per set, interleaved, best of ``--repeat``: the stage as shipped against the cut plus
the same stage (CPU ms per page, the cut included), how many pages' text is identical, and
content-line F1 of both (bench/extract_bench.py's measure). docs/extract.md has the figures
(2-4% faster at load 7, 17 pages' text changed: not adopted).

    python bench/extract_prestrip.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results  # noqa: E402
from bench.extract_bench import SETS, load, score, work_table  # noqa: E402
from tasks.kernels import large_strings, utf8_buffers  # noqa: E402

# element kinds after their start tag
_NORMAL, _SCRIPT, _STYLE, _RAW, _PLAINTEXT, _FOREIGN = 0, 1, 2, 3, 4, 5
# lexbor parses with scripting off, so <noscript> holds markup (scripts too): a normal element
_NAMES = {b"script": _SCRIPT, b"style": _STYLE, b"title": _RAW, b"textarea": _RAW, b"xmp": _RAW,
          b"iframe": _RAW, b"noembed": _RAW, b"noframes": _RAW, b"plaintext": _PLAINTEXT,
          b"svg": _FOREIGN, b"math": _FOREIGN}


def _word(w: bytes) -> np.ndarray:
    return np.frombuffer(w, np.uint8).copy()


_W_SCRIPT, _W_COMMENT, _W_COMMENT_END, _W_CDATA, _W_CDATA_END = (
    _word(w) for w in (b"script", b"<!--", b"-->", b"[cdata[", b"]]>"))
# every name of _NAMES, as one buffer: the names' bytes, their offsets, their kinds
_ALL_NAMES = np.frombuffer(b"".join(_NAMES), np.uint8).copy()
_NAME_OFF = np.cumsum([0] + [len(n) for n in _NAMES]).astype(np.int64)
_NAME_KIND = np.array(list(_NAMES.values()), np.int64)


@njit(cache=False)
def _space(c):
    return c == 9 or c == 10 or c == 12 or c == 13 or c == 32


@njit(cache=False)
def _lower(c):
    return c + 32 if 65 <= c <= 90 else c


@njit(cache=False)
def _is(data, i, end, word):
    """data[i:end] starts with ``word`` (lower-case ASCII), ignoring ASCII case."""
    n = len(word)
    if i + n > end:
        return False
    for k in range(n):  # noqa: SIM110 - a generator does not compile under numba
        if _lower(data[i + k]) != word[k]:
            return False
    return True


@njit(cache=False)
def _at_end_tag(data, i, end, name):
    """``</name`` at ``i`` as the tokenizer ends a raw-text element ``name`` with it: followed by
    white space, ``/``, ``>`` or the end of the page."""
    if i + 2 + len(name) > end or data[i] != 60 or data[i + 1] != 47 or not _is(data, i + 2, end, name):
        return False
    k = i + 2 + len(name)
    return k >= end or _space(data[k]) or data[k] == 47 or data[k] == 62


@njit(cache=False)
def _next(data, i, end, c):
    while i < end and data[i] != c:
        i += 1
    return i


_ONES, _HIGHS, _LTS = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080), np.uint64(0x3C3C3C3C3C3C3C3C)


@njit(cache=False)
def _next_lt(data, words, i, end):
    """The next '<' at or after ``i`` (``end`` if none), eight bytes at a time: most of a page's
    bytes are passed over here."""
    while i < end and (i & 7) != 0:
        if data[i] == 60:
            return i
        i += 1
    w, wend = i >> 3, end >> 3
    while w < wend:
        x = words[w] ^ _LTS
        if ((x - _ONES) & ~x & _HIGHS) != 0:
            break
        w += 1
    i = max(i, w << 3)
    while i < end:
        if data[i] == 60:
            return i
        i += 1
    return end


@njit(cache=False)
def _tag_end(data, i, end):
    """Given ``i`` just after a tag's name, the position after its closing ``>`` (attributes
    and their quoted values read as the tokenizer reads them) and whether it ends in ``/>``;
    -1 when the page ends inside the tag."""
    while i < end:
        c = data[i]
        if c == 62:
            return i + 1, data[i - 1] == 47
        if _space(c) or c == 47:
            i += 1
            continue
        i += 1  # an attribute name (its first character may be '=')
        while i < end and not (_space(data[i]) or data[i] == 47 or data[i] == 62 or data[i] == 61):
            i += 1
        while i < end and _space(data[i]):
            i += 1
        if i < end and data[i] == 61:
            i += 1
            while i < end and _space(data[i]):
                i += 1
            if i < end and (data[i] == 34 or data[i] == 39):
                i = _next(data, i + 1, end, data[i]) + 1
            else:
                while i < end and not (_space(data[i]) or data[i] == 62):
                    i += 1
    return -1, False


@njit(cache=False)
def _escaped_script_end(data, i, end, state):
    """Where a script's content ends, by the tokenizer's script-data states, from ``i`` in
    ``state``: 0 script data, 1 escaped (after a ``<!--``), 2 double escaped (after a
    ``<script`` in an escaped part), read byte by byte; and whether it never left plain script data."""
    plain = state == 0
    while i < end:
        c = data[i]
        if c == 60:
            if state != 2 and _at_end_tag(data, i, end, _W_SCRIPT):
                return i, plain
            if state == 0 and _is(data, i, end, _W_COMMENT):
                state, plain = 1, False
                i += 4
                continue
            if state == 1 and _is(data, i + 1, end, _W_SCRIPT):
                k = i + 7
                if k < end and (_space(data[k]) or data[k] == 47 or data[k] == 62):
                    state = 2
            elif state == 2 and _at_end_tag(data, i, end, _W_SCRIPT):
                state = 1
        elif c == 45 and state != 0 and _is(data, i, end, _W_COMMENT_END):
            state = 0
            i += 3
            continue
        i += 1
    return -1, plain


@njit(cache=False)
def _script_end(data, words, i, end):
    """:func:`_escaped_script_end` from plain script data, looking only at the '<' in it until a
    ``<!--`` calls for the byte-by-byte reading."""
    i = _next_lt(data, words, i, end)
    while i < end:
        if _at_end_tag(data, i, end, _W_SCRIPT):
            return i, True
        if _is(data, i, end, _W_COMMENT):
            stop, _ = _escaped_script_end(data, i + 4, end, 1)
            return stop, False
        i = _next_lt(data, words, i + 1, end)
    return -1, True


@njit(cache=False)
def _raw_end(data, words, i, end, name):
    """The first ``</name`` that ends a raw-text element ``name``, looking only at the '<'."""
    i = _next_lt(data, words, i, end)
    while i < end:
        if _at_end_tag(data, i, end, name):
            return i
        i = _next_lt(data, words, i + 1, end)
    return -1


@njit(cache=False)
def _comment_end(data, i, end):
    """Given ``i`` at ``<!--``, the position after the comment (``-->``, ``--!>``, or the
    abrupt ``<!-->`` / ``<!--->``); ``end`` when it never closes."""
    k = i + 4
    if k < end and data[k] == 62:
        return k + 1
    if k + 1 < end and data[k] == 45 and data[k + 1] == 62:
        return k + 2
    while k + 2 < end:
        if data[k] == 45 and data[k + 1] == 45:
            if data[k + 2] == 62:
                return k + 3
            if k + 3 < end and data[k + 2] == 33 and data[k + 3] == 62:
                return k + 4
        k += 1
    return end


@njit(cache=False)
def _strip(data, offsets, words):
    out = np.empty(len(data), np.uint8)
    out_off = np.zeros(len(offsets), np.int64)
    w = 0
    for r in range(len(offsets) - 1):
        start, end = offsets[r], offsets[r + 1]
        i = start
        copied = start  # data[copied:i] is still to be written out
        foreign = 0  # depth of <svg> / <math>, inside which <script> and <style> are markup
        while i < end:
            i = _next_lt(data, words, i, end)
            if i + 1 >= end:
                break
            c = data[i + 1]
            if c == 33:  # <!
                if _is(data, i, end, _W_COMMENT):
                    i = _comment_end(data, i, end)
                    continue
                if foreign > 0 and _is(data, i + 2, end, _W_CDATA):
                    k = i + 9
                    while k < end and not _is(data, k, end, _W_CDATA_END):
                        k += 1
                    i = min(end, k + 3)
                    continue
                i = min(end, _next(data, i + 2, end, 62) + 1)  # doctype, bogus comment
                continue
            if c == 63:  # <? bogus comment
                i = min(end, _next(data, i + 2, end, 62) + 1)
                continue
            closing = c == 47
            n0 = i + 2 if closing else i + 1
            if n0 >= end:
                break
            first = _lower(data[n0])
            if not 97 <= first <= 122:
                if closing:  # </> is dropped, </ followed by anything else is a bogus comment
                    i = min(end, _next(data, n0, end, 62) + 1)
                else:
                    i += 1  # a '<' in text
                continue
            n1 = n0
            while n1 < end and not (_space(data[n1]) or data[n1] == 47 or data[n1] == 62):
                n1 += 1
            after, self_closing = _tag_end(data, n1, end)
            if after < 0:
                break  # the page ends inside a tag
            kind, t = _NORMAL, 0
            if n1 - n0 <= 9:  # the longest name of _NAMES
                for t in range(len(_NAME_KIND)):
                    a, b = _NAME_OFF[t], _NAME_OFF[t + 1]
                    if n1 - n0 == b - a and first == _ALL_NAMES[a] and _is(data, n0, n1, _ALL_NAMES[a:b]):
                        kind = _NAME_KIND[t]
                        break
            i = after
            if kind == _FOREIGN:
                if closing:
                    foreign = max(0, foreign - 1)
                elif not self_closing:
                    foreign += 1
                continue
            if closing or kind == _NORMAL or foreign > 0:
                continue
            if kind == _PLAINTEXT:
                break  # the rest of the page is text
            if kind == _SCRIPT:
                stop, plain = _script_end(data, words, i, end)
            else:
                stop, plain = _raw_end(data, words, i, end, _ALL_NAMES[_NAME_OFF[t]:_NAME_OFF[t + 1]]), kind == _STYLE
            if stop < 0:
                break  # never closed: it runs to the end of the page, kept as it is
            if plain and stop > i:
                out[w:w + i - copied] = data[copied:i]
                w += i - copied
                copied = stop
            i = stop
        out[w:w + end - copied] = data[copied:end]
        w += end - copied
        out_off[r + 1] = w
    return out[:w], out_off


def cut(html: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The pages with the contents of their ``<script>`` and ``<style>`` elements cut out."""
    if isinstance(html, pa.ChunkedArray):
        html = html.combine_chunks()
    assert html.null_count == 0
    data, offsets = utf8_buffers(html)
    out, out_off = _strip(data, offsets, data[:len(data) // 8 * 8].view(np.uint64))
    return large_strings(out, out_off)


def check_cases() -> None:
    """The tokenizer's corners the cut must respect (what is left is what the parser reads)."""
    cases = {
        "<p>a</p><script>x<y</script><p>b</p><style>.a{}</style>c": "<p>a</p><script></script><p>b</p><style></style>c",
        "<svg><script>k</script></svg><script>z</script>": "<svg><script>k</script></svg><script></script>",
        "<!-- <script> -->t<script>q</script>": "<!-- <script> -->t<script></script>",
        "<a title='<script>'>u</a><script>v</script>": "<a title='<script>'>u</a><script></script>",
        "</ <script>w</script>": "</ <script>w</script>",
        "<script>a<!--<script>b</script>c</script>d-->e</script>f": "<script>a<!--<script>b</script>c</script>d-->e</script>f",
        "<title><script></title><p>t</p>": "<title><script></title><p>t</p>",
        "<SCRIPT type=x>y</Script >z": "<SCRIPT type=x></Script >z",
    }
    got = cut(pa.array(list(cases))).to_pylist()
    for (src, want), out in zip(cases.items(), got, strict=True):
        assert out == want, (src, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from tasks.extract.config import ExtractConfig
    from tasks.extract.stage import extract

    check_cases()
    result: dict = {"sets": {}}
    for name in SETS:
        d = load(name)
        table = work_table(d["html"])
        n = len(d["html"])
        chars = sum(len(h) for h in d["html"])
        cut(table.column("text").slice(0, 2))  # compiled before timing

        def with_cut(t: pa.Table = table):
            return extract(t.set_column(0, "text", cut(t.column("text"))), ExtractConfig())

        runs = {"stage": lambda t=table: extract(t, ExtractConfig()), "cut_then_stage": with_cut}
        best: dict[str, float] = {}
        res: dict = {}
        for _ in range(args.repeat):
            for key, fn in runs.items():
                c0 = time.process_time()
                res[key] = fn()
                best[key] = min(best.get(key, float("inf")), time.process_time() - c0)
        c0 = time.process_time()
        kept = sum(len(x) for x in cut(table.column("text")).to_pylist())
        out = {"pages": n, "kept_share_of_chars": round(kept / chars, 3),
               "identical_text": sum(a == b for a, b in zip(res["stage"].text, res["cut_then_stage"].text,
                                                            strict=True))}
        for key, r in res.items():
            texts = [t if k else "" for t, k in zip(r.text, r.keep, strict=True)]
            out[key] = {"ms_per_page": round(1000 * best[key] / n, 3), "pages_per_cpu_s": round(n / best[key], 1),
                        **score(d["page"], d["main"], texts)}
        result["sets"][name] = out
        print(name, out, flush=True)
    print("->", write_results("extract_prestrip", result))


if __name__ == "__main__":
    main()
