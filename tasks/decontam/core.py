"""N-gram indexes of evaluation sets (built once per set and version, kept in storage) and
the decontamination of a table of documents against them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from tasks.decontam import kernels
from tasks.decontam.config import DecontamConfig, EvalSet
from tasks.dedup import kernels as dedup_kernels
from tasks.dedup.minhash import ascii_tables, normalize_for_dedup, normalize_token
from tasks.kernels import ascii_space, gather, large_strings, utf8_buffers
from tasks.schema import SPANS, attribute_name
from tasks.storage import Storage, filesystem_for

# Bump when normalization or hashing changes: old indexes are then rebuilt, not misread.
SCHEME = "decontam-v1/datatrove-norm/fnv1a-rolling64/numbers-at-most-half"
INDEX_DIR = "state/decontam_index"  # beside state/near_index: kept across releases, never published
INDEX_SCHEMA = pa.schema([("hash", pa.uint64()), ("task", pa.string())])
BITMAP_LOG2 = 23  # 1 MB of bits: under 1% of clean n-grams reach the binary search up to ~80k keys


class DecontamError(ValueError):
    """An evaluation set cannot be used; the message names it and the problem, in one line."""


@dataclass
class SetIndex:
    """One evaluation set's n-grams: sorted hashes with the task each came from."""

    spec: EvalSet
    sha256: str
    rows: int
    too_short: int  # rows with fewer than n words: they contribute no n-gram
    hashes: np.ndarray
    tasks: list[str]
    path: str
    reused: bool

    def manifest(self) -> dict[str, Any]:
        return {"name": self.spec.name, "url": self.spec.url, "sha256": self.sha256, "columns": self.spec.columns,
                "rows": self.rows, "rows_too_short": self.too_short, "ngrams": int(len(np.unique(self.hashes))),
                "index": self.path, "index_reused": self.reused}


@dataclass
class DecontamIndex:
    """Every evaluation set of a run, merged for lookups."""

    n: int
    sets: list[SetIndex]
    keys: np.ndarray = field(init=False)  # sorted distinct hashes of all sets
    bits: np.ndarray = field(init=False)
    shift: np.uint64 = field(init=False)
    _hash: np.ndarray = field(init=False)  # every (hash, set, task) entry, sorted by hash
    _set: np.ndarray = field(init=False)
    _task_id: np.ndarray = field(init=False)  # index into _task_names
    _task_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        hashes = [s.hashes for s in self.sets]
        all_hash = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        set_of = np.concatenate([np.full(len(s.hashes), i, np.int32) for i, s in enumerate(self.sets)]) \
            if self.sets else np.zeros(0, np.int32)
        tasks = [t for s in self.sets for t in s.tasks]
        order = np.argsort(all_hash, kind="stable")
        self._hash, self._set = all_hash[order], set_of[order]
        names, ids = np.unique(np.array(tasks, dtype=object), return_inverse=True) if tasks else ([], np.zeros(0, int))
        self._task_names = [str(t) for t in names]
        self._task_id = np.asarray(ids, np.int32).reshape(-1)[order]
        self.keys = np.unique(all_hash)
        self.bits, self.shift = kernels.bitmap(self.keys, BITMAP_LOG2)

    def manifest(self) -> list[dict[str, Any]]:
        return [s.manifest() for s in self.sets]


# -- reading evaluation sets ----------------------------------------------------------------

def _read_eval_set(spec: EvalSet) -> tuple[pa.Table, str]:
    """The set's table and the sha256 of its file's bytes."""
    where = f"evaluation set {spec.name!r} ({spec.url})"
    try:
        fs, path = filesystem_for(spec.url)
        data = fs.cat_file(path)
    except Exception as exc:  # noqa: BLE001 (any failure to fetch is the same user error)
        raise DecontamError(f"{where}: cannot be read: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    sha = hashlib.sha256(data).hexdigest()
    name = spec.url.lower()
    try:
        if name.endswith(".gz"):
            data, name = gzip.decompress(data), name[:-3]
        if name.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
        elif name.endswith((".jsonl", ".json", ".ndjson")):
            table = pajson.read_json(io.BytesIO(data))
        else:
            raise DecontamError(f"{where}: unknown format (expected .parquet, .jsonl, .json or .ndjson, optionally .gz)")
    except DecontamError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DecontamError(f"{where}: cannot be parsed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    missing = [c for c in [*spec.columns, *([spec.id_column] if spec.id_column else [])] if c not in table.column_names]
    if missing:
        raise DecontamError(f"{where}: no column {missing[0]!r} (columns: {', '.join(table.column_names)})")
    if table.num_rows == 0:
        raise DecontamError(f"{where}: is empty")
    return table, sha


def _row_texts(table: pa.Table, spec: EvalSet) -> tuple[list[str], list[str]]:
    cols = [table.column(c).to_pylist() for c in spec.columns]
    texts = ["\n".join(str(v) for v in vals if v is not None) for vals in zip(*cols, strict=True)]
    ids = ([str(v) for v in table.column(spec.id_column).to_pylist()] if spec.id_column
           else [str(i) for i in range(table.num_rows)])
    return texts, ids


def _index_path(sha: str, spec: EvalSet, n: int) -> str:
    key = json.dumps({"scheme": SCHEME, "n": n, "columns": spec.columns, "id": spec.id_column}, sort_keys=True)
    return f"{INDEX_DIR}/{sha}/{hashlib.sha256(key.encode()).hexdigest()[:16]}.parquet"


def build_set_index(table: pa.Table, spec: EvalSet, n: int) -> tuple[np.ndarray, list[str], int]:
    """(hashes, task of each hash, rows too short) of one evaluation set; each distinct
    (hash, task) pair once."""
    texts, ids = _row_texts(table, spec)
    norm = normalize_for_dedup(pa.array(texts, pa.string()))
    data, offsets = utf8_buffers(norm)
    hashes, numbers, offs = kernels.ngram_hashes(data, offsets, n)
    per_row = np.diff(offs)
    row = np.repeat(np.arange(len(texts)), per_row)
    # Mostly-number n-grams ("0 0 0 ..." once digits are normalized) match every table of
    # figures on the web (measured: 19 of 8.6k real documents flagged by HumanEval/9's example
    # lists alone); they say nothing about a benchmark.
    informative = numbers * 2 <= n
    hashes, row = hashes[informative], row[informative]
    if not hashes.size:
        raise DecontamError(f"evaluation set {spec.name!r} ({spec.url}): no row has {n} words (at most half of "
                            f"them numbers) in columns {', '.join(spec.columns)}")
    pairs = np.unique(np.stack([hashes, row.astype(np.uint64)], axis=1), axis=0)
    too_short = len(texts) - len(np.unique(row))
    return pairs[:, 0].copy(), [ids[int(r)] for r in pairs[:, 1]], too_short


def load_indexes(cfg: DecontamConfig, storage: Storage | None) -> DecontamIndex:
    """Validate every evaluation set (before any work: a bad one raises
    :class:`DecontamError` naming it) and load its n-gram index from ``storage``, building and
    storing it there first if this version of the set was never indexed."""
    sets = []
    for spec in cfg.eval_sets:
        table, sha = _read_eval_set(spec)
        path = _index_path(sha, spec, cfg.n)
        stored = None
        if storage is not None and storage.exists(path):
            stored = storage.read_parquet(path)
        if stored is not None:
            hashes = stored.column("hash").to_numpy()
            tasks = stored.column("task").to_pylist()
            too_short = int((stored.schema.metadata or {}).get(b"rows_too_short", b"0"))
        else:
            hashes, tasks, too_short = build_set_index(table, spec, cfg.n)
            if storage is not None:
                out = pa.table({"hash": pa.array(hashes, pa.uint64()), "task": pa.array(tasks, pa.string())},
                               schema=INDEX_SCHEMA.with_metadata({"rows_too_short": str(too_short), "scheme": SCHEME,
                                                                  "n": str(cfg.n), "url": spec.url}))
                storage.write_parquet(path, out)
        sets.append(SetIndex(spec, sha, table.num_rows, too_short, hashes, tasks, path, stored is not None))
    return DecontamIndex(cfg.n, sets)


# -- decontaminating documents ---------------------------------------------------------------

PREFIX = "decontam"


def attribute_names() -> dict[str, str]:
    return {k: attribute_name(PREFIX, "ngram", k) for k in ("share", "spans", "benchmark", "task")}


@dataclass
class DecontamResult:
    """Per input row: ``keep``, ``new_text`` (the text, cut in cut mode), ``reasons`` and
    ``details`` (None for kept rows), ``attributes`` (columns named by
    :func:`attribute_names`); ``figures`` are the shard's counts."""

    keep: np.ndarray
    new_text: pa.Array
    reasons: list[str | None]
    details: list[str | None]
    attributes: dict[str, pa.Array]
    figures: dict[str, Any]


def _natural(task: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", task))


def _spans_array(spans: dict[int, list[dict[str, Any]]], flagged: np.ndarray, n_docs: int) -> pa.Array:
    """The spans column: empty lists except at ``flagged``, without a Python object per row."""
    lengths = np.zeros(n_docs, np.int32)
    values = []
    for d in flagged.tolist():
        lengths[d] = len(spans[d])
        values += spans[d]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, SPANS.value_type))


def _walk_inputs(texts: pa.Array) -> tuple:
    """The arguments the fused kernels share: the raw UTF-8, the tokens holding a non-ASCII
    character (normalized in Python once per distinct token, as ``normalize_for_dedup`` does)
    as word hashes, and the byte tables."""
    classes, lower = ascii_tables("datatrove")
    space = ascii_space()
    data, offsets = utf8_buffers(texts)
    start, stop = dedup_kernels.wide_tokens(data, offsets, space)  # the tokens near dedup normalizes in Python too
    wdata, woff = gather(data, start, stop)
    enc = pc.dictionary_encode(large_strings(wdata, woff))
    rep = pa.array([normalize_token(t, "datatrove") for t in enc.dictionary.to_pylist()], pa.large_string())
    rep_data, rep_off = utf8_buffers(rep)
    rep_hashes, rep_hoff = kernels.rep_word_hashes(rep_data, rep_off)
    wide_index = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return data, offsets, space, start, stop, wide_index, rep_hashes, rep_hoff, classes, lower


def lookup_counts(texts: pa.Array, index: DecontamIndex) -> tuple[np.ndarray, np.ndarray]:
    """(matched n-grams, n-grams) per text: datatrove-normalized word n-grams looked up in
    ``index``, in one compiled pass over the raw text (normalization fused with hashing and
    lookup)."""
    return kernels.fused_lookup(*_walk_inputs(texts), True, index.n, index.keys, index.bits, index.shift)


def _ngrams_and_spans(texts: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For a few texts: n-gram hashes, their per-text offsets, and per normalized word the
    character span (start, stop, relative to its text) of the whitespace token it comes from,
    with the per-text word offsets."""
    args = _walk_inputs(texts)
    data, offsets, wide_index, rep_hoff = args[0], args[1], args[5], args[7]
    capacity = len(data) + int(np.diff(rep_hoff)[wide_index].sum()) + 1
    hashes, hoffs, tstart, tstop, woffs = kernels.fused_spans(*args, True, n, capacity)
    # byte -> character offsets: characters are the bytes that are not UTF-8 continuation bytes
    chars = np.zeros(len(data) + 1, np.int64)
    np.cumsum((data & 0xC0) != 0x80, out=chars[1:])
    base = np.repeat(chars[offsets[:-1]], np.diff(woffs))
    return hashes, hoffs, chars[tstart] - base, chars[tstop] - base, woffs


def decontaminate(table: pa.Table, index: DecontamIndex, cfg: DecontamConfig, text_column: str = "text") -> DecontamResult:
    """Look up every word n-gram of every document in ``index``. A document with at least
    ``cfg.min_matches`` matched n-grams is contaminated: dropped (mode drop) or cut (its
    matched n-grams' spans removed, mode cut). Its reason names the benchmark; attributes
    give the share of its n-grams that matched, the spans, the benchmark and the task."""
    texts = table.column(text_column).combine_chunks()
    n_docs = len(texts)
    hits, grams = lookup_counts(texts, index)
    flagged = np.nonzero(hits >= cfg.min_matches)[0]

    keep = np.ones(n_docs, bool)
    reasons: list[str | None] = [None] * n_docs
    details: list[str | None] = [None] * n_docs
    share = np.zeros(n_docs, np.float64)
    benchmark: list[str | None] = [None] * n_docs
    task: list[str | None] = [None] * n_docs
    spans_out: dict[int, list[dict[str, Any]]] = {}
    new_text = texts
    per_set = {s.spec.name: {"docs": 0, "ngrams": 0} for s in index.sets}

    if len(flagged):
        sub = texts.take(pa.array(flagged))
        hashes, hoffs, tstart, tstop, woffs = _ngrams_and_spans(sub, index.n)
        lengths = pc.utf8_length(sub).fill_null(0).to_numpy(zero_copy_only=False)
        n_sets, n_tasks = len(index.sets), max(1, len(index._task_names))
        cut: dict[int, str] = {}
        for j, d in enumerate(flagged.tolist()):
            doc_hashes = hashes[hoffs[j]:hoffs[j + 1]]
            at = np.minimum(np.searchsorted(index.keys, doc_hashes), len(index.keys) - 1)
            matched = np.nonzero(index.keys[at] == doc_hashes)[0]
            # every (set, task) entry of every matched n-gram: one vote each
            mh = doc_hashes[matched]
            lo = np.searchsorted(index._hash, mh, "left")
            per = np.searchsorted(index._hash, mh, "right") - lo
            first = np.cumsum(per) - per
            entry = np.arange(int(per.sum())) - np.repeat(first, per) + np.repeat(lo, per)
            pos = np.repeat(np.arange(len(mh)), per)
            ent_set, ent_task = index._set[entry].astype(np.int64), index._task_id[entry].astype(np.int64)
            keys, votes = np.unique(ent_set * n_tasks + ent_task, return_counts=True)
            if not len(keys):  # the fused pass and this one disagree (never seen): the document is not flagged
                continue
            top = votes.max()
            winners = keys[votes == top]
            best_set = int((winners // n_tasks).min())
            # tasks that normalize to the same text (HumanEval/56 and /61 differ only in their
            # bracket characters) tie: all of them are named
            best_task = ",".join(sorted((index._task_names[int(t)] for t in winners[winners // n_tasks == best_set] % n_tasks),
                                        key=_natural))
            name = index.sets[best_set].spec.name
            set_grams = np.bincount(np.unique(pos * n_sets + ent_set) % n_sets, minlength=n_sets)
            for si in np.nonzero(set_grams)[0]:
                per_set[index.sets[si].spec.name]["docs"] += 1
                per_set[index.sets[si].spec.name]["ngrams"] += int(set_grams[si])
            starts, stops = tstart[woffs[j]:woffs[j + 1]], tstop[woffs[j]:woffs[j + 1]]
            if len(starts) == int(grams[d]) + index.n - 1:
                # n-gram p spans the tokens of words p .. p+n-1; both ends only grow with p, so
                # sorted order is position order and overlapping or touching spans are neighbours
                a, b = starts[matched], stops[matched + index.n - 1]
                cuts = np.nonzero(a[1:] > b[:-1])[0] + 1
                spans = list(zip(a[np.concatenate([[0], cuts])].tolist(),
                                 b[np.concatenate([cuts - 1, [len(b) - 1]])].tolist(), strict=True))
            else:  # the token mapping disagrees with the normalizer: blame the whole text
                spans = [(0, int(lengths[j]))]
            frac = len(matched) / max(1, int(grams[d]))
            share[d], benchmark[d], task[d] = frac, name, best_task
            spans_out[d] = [{"start": a, "end": b, "score": frac} for a, b in spans]
            reason = f"contaminated {name} ({best_task}, {len(matched)} of {int(grams[d])} {index.n}-grams)"
            if cfg.mode == "drop":
                keep[d], reasons[d] = False, reason
            else:
                text = sub[j].as_py()
                pieces, last = [], 0
                for a, b in spans:
                    pieces.append(text[last:a])
                    last = b
                pieces.append(text[last:])
                cut[d] = "".join(pieces)
                if not cut[d].strip():
                    keep[d], reasons[d] = False, reason
            if not keep[d]:
                details[d] = json.dumps({"benchmark": name, "task": best_task, "share": round(frac, 4),
                                         "spans": spans[:20]})
        if cut:
            mask = np.zeros(n_docs, bool)
            mask[list(cut)] = True
            new_text = pc.replace_with_mask(texts, pa.array(mask), pa.array([cut[d] for d in sorted(cut)], texts.type))

    names = attribute_names()
    attributes = {
        names["share"]: pa.array(share, pa.float64()),
        names["spans"]: _spans_array(spans_out, flagged, n_docs),
        names["benchmark"]: pa.array(benchmark, pa.string()),
        names["task"]: pa.array(task, pa.string()),
    }
    figures = {"docs_in": n_docs, "docs_contaminated": int(len(flagged)), "docs_dropped": int((~keep).sum()),
               "docs_cut": int(len(flagged) - (~keep).sum()) if cfg.mode == "cut" else 0,
               "ngrams_checked": int(grams.sum()), "sets": per_set}
    return DecontamResult(keep, new_text, reasons, details, attributes, figures)
