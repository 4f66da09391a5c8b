"""Stage 1, ingest: read input files into the Dolma document model.

Plain functions over Arrow tables: :func:`plan_shards` turns the configured inputs into
shards, :func:`ingest_shard` turns one shard into a work table (documents plus the columns
later stages need) and a rejects table. Nothing here knows about Prefect or Ray.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import re
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
import zstandard

from tasks.extract.warc import WEB_SUFFIXES, web_format
from tasks.ingest_config import ColumnMap, IngestConfig, InputSpec
from tasks.schema import TIMESTAMP, WORK_SCHEMA, reason_key, to_rejects, word_counts
from tasks.storage import filesystem_for, public_url
from tasks.text_norm import content_key, normalize_text, normalize_texts  # noqa: F401  (their callers' names)

if TYPE_CHECKING:  # the pipeline file sits above ingest: its type only
    from tasks.config import PipelineConfig
    from tasks.tokens_config import TokenizerConfig

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl.zst", ".json.zst",
                  ".ndjson.zst", ".jsonl.zstd")
DATA_SUFFIXES = PARQUET_SUFFIXES + JSONL_SUFFIXES + WEB_SUFFIXES
# a WARC / WET file larger than this is read as several shards of record ranges
WEB_SHARD_BYTES = 256 << 20
# bytes read past a record range's end at first, for its last record (doubled until it ends)
WEB_RANGE_SLACK = 1 << 20
# how far past its range a shard reads to finish its last record: a record cut short further
# than this is a reject (a damaged member would otherwise have the shard read the whole file)
WEB_RANGE_MAX_SLACK = 64 << 20
_SOURCE_CLEAN = re.compile(r"[^\w.-]+")
_INVISIBLE_ONLY = r"^[\s\p{Z}\p{Cf}\p{Cc}]*$"  # RE2: separators, format characters, controls


class InputError(RuntimeError):
    """An input file cannot be read at all. The message starts with the file's URL."""


@dataclass(frozen=True)
class Shard:
    """One unit of map work: a whole input file, or a range of a Parquet file's row groups."""

    index: int
    uri: str
    format: str
    source: str
    columns: ColumnMap
    row_groups: tuple[int, int] | None = None  # [start, stop) or None for the whole file
    endpoint_url: str | None = None
    root: str | None = None  # the local input folder its links must stay in (see link_roots)
    byte_range: tuple[int, int] | None = None  # WARC / WET: records starting in [start, stop)

    @property
    def name(self) -> str:
        return f"{self.index:05d}"

    @property
    def first_of_file(self) -> bool:
        return (self.row_groups is None or self.row_groups[0] == 0) and (
            self.byte_range is None or self.byte_range[0] == 0)


@dataclass
class IngestResult:
    work: pa.Table
    rejects: pa.Table
    words: pa.Array  # word counts of ``work``'s texts, row by row
    stats: dict[str, Any] = field(default_factory=dict)
    # with ``ingest_shard(tokenizer=...)``: tokens of ``work``'s texts (None: not counted, see
    # ``tokenizer``) and the tokenizer's name or why there are none (tasks.tokens.release_counts)
    model_tokens: np.ndarray | None = None
    tokenizer: str | None = None
    # the scratch Parquet file ``work`` was read from, when it is unchanged: copied rather
    # than encoded again (tasks.stepkit.MapResult.kept_file)
    work_file: str | None = None


# -- planning -------------------------------------------------------------------------------

def format_of(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    lower = path.lower()
    web = web_format(lower)
    if web is not None:
        return web
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise InputError(f"{path}: cannot tell the format from the name (expected one of {', '.join(DATA_SUFFIXES)})")


def is_glob(fs, base: str) -> bool:
    """A pattern, unless a file or folder of that very name exists (``week[1].jsonl``)."""
    return any(ch in base for ch in "*?[") and not fs.exists(base)


def source_name(spec: InputSpec, fs, base: str, is_dir: bool) -> str:
    if spec.source:
        return spec.source
    name = base.rstrip("/").rsplit("/", 1)[-1]
    if not is_dir:
        for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
    if is_glob(fs, base):  # the text before the first wildcard: /data/web-*.jsonl is source web
        name = re.split(r"[*?\[]", base, maxsplit=1)[0].rstrip("/").rsplit("/", 1)[-1] or "input"
    # letters of any script stay (a file 日本.jsonl is source 日本): the name is data, and
    # tasks.layout.component encodes it where it names a folder
    return _SOURCE_CLEAN.sub("_", unicodedata.normalize("NFC", name)).strip("._-") or "input"


def skipped_name(name: str) -> bool:
    """Names the tools that write data folders use for what is not data, skipped below an
    input root, as Hadoop's and Spark's readers skip them: a leading ``_`` (``_SUCCESS``,
    ``_committed_*``, ``_started_*``, ``_temporary/`` of an unfinished write, ``__MACOSX/``)
    or ``.`` (hidden files, ``.DS_Store``, macOS ``._*`` resource forks, Hadoop's ``.*.crc``)."""
    return name.startswith(("_", "."))


def _glob_root(pattern: str) -> str:
    """The folder a pattern starts in: its components before the first wildcard."""
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


def _is_local(fs) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in proto or "local" in proto


def link_roots(root: str) -> list[str]:
    """Where a symbolic link under the local input folder ``root`` may point: inside
    ``root``, and for a Hugging Face snapshot (``<repo>/snapshots/<rev>/...``, whose files are
    links to ``<repo>/blobs/``) inside its repository's ``blobs`` folder."""
    real = os.path.realpath(root)
    out = [real]
    parts = real.split(os.sep)
    if "snapshots" in parts[:-1]:
        k = len(parts) - 1 - parts[::-1].index("snapshots")
        out.append(os.sep.join(parts[:k] + ["blobs"]))
    return out


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _walk_local(root: str, wanted) -> list[str]:
    """Files under a local folder that ``wanted(path, is_dir)`` accepts, following links to files and
    folders inside :func:`link_roots`; a link that leaves them is listed as it is, so that its
    shard fails naming it (``read_bytes``). Folders named like data files are listed too."""
    roots = link_roots(root)
    out: list[str] = []
    seen: set[str] = set()
    stack = [root.rstrip("/") or "/"]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:  # a link loop, or two links to one folder
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"{folder}: cannot list the folder: {exc}") from None
        for entry in entries:
            if skipped_name(entry.name):
                continue
            path = f"{folder.rstrip('/')}/{entry.name}"
            if entry.is_symlink() and not _inside(os.path.realpath(path), roots):
                if wanted(path, False):
                    out.append(path)  # refused when read, by name
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(path)
                if wanted(path, True):
                    out.append(path)  # a folder named like a data file: its shard says so
            elif wanted(path, False):
                out.append(path)
    return sorted(out)


def expand_input(spec: InputSpec, endpoint_url: str | None = None) -> tuple[str, list[str], Any]:
    """The source name and the sorted data files of one input spec."""
    fs, base = filesystem_for(spec.uri, endpoint_url)
    protocol = spec.uri.split("://", 1)[0] if "://" in spec.uri else None

    def wanted(path: str, is_dir: bool = False) -> bool:
        # a folder named like a data file is listed, so that its shard says what it is
        named = path.lower().endswith(DATA_SUFFIXES)
        return named if is_dir else (named or spec.format != "auto")

    if is_glob(fs, base):
        root = _glob_root(base).rstrip("/")
        files = sorted(p for p in fs.glob(base) if not fs.isdir(p)
                       and not any(skipped_name(c) for c in p[len(root):].split("/") if c))
        is_dir = True
    elif fs.isdir(base):
        if _is_local(fs):
            files = _walk_local(base, wanted)
        else:
            # a directory named like a data file is kept as a "file": its shard fails with a
            # clear error instead of being skipped without a word
            entries = fs.find(base, withdirs=True, detail=True)
            root = base.rstrip("/")
            files = sorted(p for p, info in entries.items() if wanted(p, info.get("type") == "directory")
                           and p.rstrip("/") != root
                           and info.get("type") in ("file", "directory")
                           and not any(skipped_name(c) for c in p[len(root):].split("/") if c))
        is_dir = True
    elif fs.exists(base):
        files, is_dir = [base], False
    else:
        raise InputError(f"{spec.uri}: input not found")
    if not files:
        raise InputError(f"{spec.uri}: no data files found (looked for {', '.join(DATA_SUFFIXES)}; names starting "
                         "with '_' or '.' are skipped)")
    source = source_name(spec, fs, base, is_dir)
    urls = [f"{protocol}://{p}" if protocol and protocol != "file" else p for p in files]
    return source, urls, fs


def input_root(spec: InputSpec, endpoint_url: str | None = None) -> str | None:
    """The local folder whose links an input may follow (None: not local, or one file named
    on purpose, which is followed wherever it points)."""
    fs, base = filesystem_for(spec.uri, endpoint_url)
    if not _is_local(fs):
        return None
    if is_glob(fs, base):
        return _glob_root(base)
    return base if fs.isdir(base) else None


def check_output_outside_inputs(config: PipelineConfig) -> None:
    """A corpus root inside an input folder would make the next run ingest its own releases
    and state files."""
    if not config.output:
        return
    out_fs, out = filesystem_for(config.output, config.storage.endpoint_url)
    out_local = _is_local(out_fs)
    out = os.path.realpath(out) if out_local else out.rstrip("/")
    for spec in config.inputs:
        fs, base = filesystem_for(spec.uri, config.storage.endpoint_url)
        if _is_local(fs) != out_local:
            continue
        root = _glob_root(base) if is_glob(fs, base) else base
        root = os.path.realpath(root) if out_local else root.rstrip("/")
        if out == root or out.startswith(root.rstrip("/") + "/"):
            raise InputError(f"output {config.output} is inside input {spec.uri}: the next run would ingest its own "
                             "releases; put the corpus root outside every input folder")


def plan_shards(config: PipelineConfig) -> list[Shard]:
    """All shards of a run, in the stable order that defines the exact-dedup survivor."""
    shards: list[Shard] = []
    endpoint = config.storage.endpoint_url
    owner: dict[str, InputSpec] = {}
    check_output_outside_inputs(config)
    for spec in config.inputs:
        source, urls, fs = expand_input(spec, endpoint)
        root = input_root(spec, endpoint)
        other = owner.setdefault(source, spec)
        if other is not spec and not (spec.source and other.source):
            # one source name given on purpose to several inputs is one source spread over
            # them; a derived name that collides would silently merge two sources' ids
            raise InputError(f"inputs {other.uri} and {spec.uri} both have source {source!r}; give each input its "
                             "own `source` (or the same one on purpose to both)")
        for url in urls:
            fmt = format_of(url, spec.format)
            if fmt in ("warc", "wet"):
                for br in _byte_ranges(fs, url, WEB_SHARD_BYTES):
                    shards.append(Shard(len(shards), url, fmt, source, spec.columns, None, endpoint, root, br))
                continue
            groups = _parquet_row_group_ranges(fs, url, config.execution.shard_rows) if fmt == "parquet" else [None]
            for rg in groups:
                shards.append(Shard(len(shards), url, fmt, source, spec.columns, rg, endpoint, root))
    return shards


def _byte_ranges(fs, url: str, size_limit: int) -> list[tuple[int, int] | None]:
    """Record ranges of a large WARC / WET file: byte ranges, each shard reading the records
    that start in its range (tasks.extract.warc.read_warc); small files stay one shard."""
    try:
        size = int(fs.info(url.split("://", 1)[1] if "://" in url else url)["size"])
    except Exception:
        return [None]  # its shard names the problem
    if size <= size_limit:
        return [None]
    return [(start, min(size, start + size_limit)) for start in range(0, size, size_limit)]


def _parquet_row_group_ranges(fs, url: str, shard_rows: int) -> list[tuple[int, int] | None]:
    """Split a large Parquet file by row groups; a file that cannot be opened stays one shard
    so that the error surfaces, with its name, when that shard runs."""
    try:
        path = url.split("://", 1)[1] if "://" in url else url
        if _is_local(fs) and not stat.S_ISREG(os.stat(path).st_mode):
            return [None]  # a FIFO would block the planner; its shard names the problem
        with fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
    except Exception:
        return [None]
    if meta.num_rows <= shard_rows or meta.num_row_groups <= 1:
        return [None]
    ranges, start, rows = [], 0, 0
    for i in range(meta.num_row_groups):
        rows += meta.row_group(i).num_rows
        if rows >= shard_rows:
            ranges.append((start, i + 1))
            start, rows = i + 1, 0
    if start < meta.num_row_groups:
        ranges.append((start, meta.num_row_groups))
    return ranges


# -- reading --------------------------------------------------------------------------------

@dataclass
class RawRows:
    """Rows of one shard before validation, with the rejects found while parsing."""

    text: pa.Array  # string; null where the row has no usable text (see bad_rows)
    ids: list[Any]
    sources: list[Any]
    added: list[Any]
    created: list[Any]
    metadata: list[str | None]
    rows: list[int]
    bad_rows: list[tuple[int, str, str | None]]  # (row, reason, raw text)
    ordinals: list[int] | None = None  # position in the shard, for ``order`` when rows are byte offsets
    skipped: dict[str, int] = field(default_factory=dict)  # WARC records that are not documents, by type
    # per row of ``text``: it is a page's HTML, which the extract stage turns into text (and
    # normalizes) before anything else reads it; None: no row is
    pages: list[bool] | None = None


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
               (stat.S_ISBLK, "a device"))


def _check_local(shard: Shard, path: str) -> None:
    """Only regular files are opened, and links only where the input folder allows."""
    if shard.root is not None:  # without links, every file under the folder resolves inside it
        target = os.path.realpath(path)
        if not _inside(target, link_roots(shard.root)):
            raise InputError(f"{shard.uri}: is a symbolic link to {target}, outside the input folder {shard.root}; "
                             "links are followed only inside it (copy the file in, or give it as an input)")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InputError(f"{shard.uri}: cannot read the file: {exc}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{shard.uri}: is a directory, not a data file")
    for test, kind in _FILE_KINDS:
        if test(mode):
            raise InputError(f"{shard.uri}: is {kind}, not a regular file")


def read_bytes(shard: Shard, extra: int = 0) -> tuple[bytes, dict[str, Any]]:
    """The shard's bytes: the whole file, or for a record-range shard its range and ``extra``
    bytes after it (where its last record ends)."""
    fs, path = filesystem_for(shard.uri, shard.endpoint_url)
    try:
        if _is_local(fs):
            _check_local(shard, path)
        elif fs.isdir(path):
            raise InputError(f"{shard.uri}: is a directory, not a data file")
        info = fs.info(path)
        if shard.byte_range is not None:
            start, stop = shard.byte_range
            data = fs.cat_file(path, start, min(int(info["size"]), stop + extra))
            # a range shard hashes no file (that would read it whole); its size is the file's
            file_info = {"uri": public_url(shard.uri), "bytes": int(info["size"]), "range": [start, stop]}
            etag = info.get("ETag") or info.get("etag")
            if etag:
                file_info["etag"] = str(etag).strip('"')
            return data, file_info
        data = fs.cat_file(path)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{shard.uri}: file not found") from None
    except Exception as exc:
        raise InputError(f"{shard.uri}: cannot read the file: {exc}") from exc
    file_info = {"uri": public_url(shard.uri), "bytes": len(data)}
    if shard.first_of_file:
        file_info["sha256"] = hashlib.sha256(data).hexdigest()
        etag = info.get("ETag") or info.get("etag")
        if etag:
            file_info["etag"] = str(etag).strip('"')
    return data, file_info


def _read_web(shard: Shard, data: bytes, file_info: dict[str, Any]) -> RawRows:
    """WARC / WET records as rows: the row is the record's byte offset in the file (what
    ``refinery explain``'s pointer names), its id the WARC record id, its text the decoded HTML
    (turned into main text by the extract stage) or the WET text."""
    from tasks.extract.warc import read_warc

    extra = WEB_RANGE_SLACK
    while True:
        got = read_warc(data, public_url(shard.uri), shard.byte_range)
        if shard.byte_range is None or shard.byte_range[0] + len(data) >= file_info["bytes"]:
            break
        # the range's last record reads as cut short: it may only end past what was read, so
        # read further (doubling) until it ends or the file does
        last_ok = max((r.offset for r in got.records), default=-1)
        if not (got.bad and got.bad[-1][0] > last_ok
                and got.bad[-1][1].startswith(("truncated", "corrupt gzip", "unreadable bytes"))):
            break
        if extra >= WEB_RANGE_MAX_SLACK:
            break
        extra *= 2
        data, _ = read_bytes(shard, extra)
    raw = RawRows([], [], [], [], [], [], [], [], ordinals=[], skipped=dict(got.skipped), pages=[])
    for k, rec in enumerate(got.records):
        raw.text.append(rec.text)
        raw.pages.append(rec.kind == "html")
        raw.ids.append(rec.record_id)
        raw.sources.append(None)
        raw.added.append(None)
        raw.created.append(rec.date)
        raw.metadata.append(dump_metadata({k2: v for k2, v in rec.meta.items() if v is not None}))
        raw.rows.append(rec.offset)
        raw.ordinals.append(k)
    raw.bad_rows = [(off, reason, None) for off, reason in got.bad]
    raw.text = pa.array(raw.text, pa.string())
    return raw


def _read_html_column(shard: Shard, data: bytes, parquet: bool, column: str) -> RawRows:
    """Parquet / JSONL rows whose ``column`` holds a page's HTML: read as the text (bytes
    decoded with the page's charset), each row marked as a page for the extract stage, with a
    pointer to its file and row."""
    from dataclasses import replace

    cmap = shard.columns
    as_text = ColumnMap(text=column, id=cmap.id, source=cmap.source, added=cmap.added, created=cmap.created,
                        metadata=cmap.metadata)
    inner = replace(shard, columns=as_text)
    raw = read_parquet(inner, data, html=True) if parquet else read_jsonl(inner, data)
    out = []
    for row, meta in zip(raw.rows, raw.metadata, strict=True):
        obj = orjson.loads(meta) if meta else {}
        obj["web"] = {"kind": "html", "uri": public_url(shard.uri), "row": row, "column": column}
        out.append(dump_metadata(obj))
    raw.metadata = out
    raw.pages = [True] * len(raw.text)
    return raw


def _decode_html_column(column: pa.ChunkedArray, rows: list[int]) -> tuple[pa.Array, list[tuple[int, str, None]]]:
    """A binary HTML column as text, each page decoded by its own declared or detected charset."""
    from tasks.extract.charset import decode_html

    texts, bad = [], []
    for row, value in zip(rows, column.to_pylist(), strict=True):
        if value is None:
            texts.append(None)
            continue
        decoded = decode_html(value)
        if decoded.text is None:
            bad.append((row, "undecodable bytes: no charset decodes the page", None))
        texts.append(decoded.text)
    return pa.array(texts, pa.string()), bad


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def dump_metadata(obj: dict[str, Any]) -> str | None:
    """Sorted-key JSON (timestamps in ISO 8601). orjson is 10x faster than json here; what
    it refuses (integers beyond 64 bits, nesting deeper than 255) goes through json."""
    if not obj:
        return None
    try:
        return orjson.dumps(obj, option=_ORJSON, default=_json_default).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)


# a string value JSON must escape: orjson writes these rows itself (see _json_strings)
_JSON_ESCAPED = r'[\x00-\x1f"\\]'
# timestamp units whose values Python's datetime holds exactly, and their ticks per second
_TICKS = {"s": 1, "ms": 1_000, "us": 1_000_000}
# 0001-01-01 and 10000-01-01 in seconds since 1970: the datetimes Python (and so the rows path) holds
_YEAR_1, _YEAR_10000 = -62_135_596_800, 253_402_300_800


def _json_strings(column: pa.Array) -> pa.Array:
    """String values (large_string) as JSON strings, as orjson writes them (UTF-8 as it is;
    only quotes, backslashes and controls escaped, and by orjson itself, on the rows that hold one)."""
    quoted = pc.binary_join_element_wise(_large('"'), column, _large('"'), _large(""))
    escaped = pc.fill_null(pc.match_substring_regex(column, _JSON_ESCAPED), False).to_numpy(zero_copy_only=False)
    if escaped.any():
        values = column.filter(pa.array(escaped)).to_pylist()
        quoted = pc.replace_with_mask(quoted, pa.array(escaped),
                                      pa.array([orjson.dumps(v).decode() for v in values], pa.large_string()))
    return quoted


def _json_timestamps(column: pa.Array) -> pa.Array | None:
    """Naive timestamps as orjson writes Python's datetimes (``2024-06-10T02:43:21``, with
    ``.ffffff`` when a fraction of a second is set); None when a value lies outside the years
    1 to 9999 (the rows path makes such a row bad: Python cannot hold it)."""
    ticks = _TICKS[column.type.unit]
    raw = column.cast(pa.int64()).fill_null(0).to_numpy()
    secs, frac = np.divmod(raw, ticks)
    if len(secs) and (secs.min() < _YEAR_1 or secs.max() >= _YEAR_10000):
        return None
    # numpy's ISO form of whole seconds is Python's (four-digit years); Arrow's strftime took
    # four times as long
    nulls = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
    text = pa.array(np.datetime_as_string(secs.astype("datetime64[s]"), unit="s"), pa.large_string(), mask=nulls)
    if frac.any():
        micros = pc.utf8_lpad(pa.array(frac * (1_000_000 // ticks)).cast(pa.large_string()), 6, "0")
        text = pc.if_else(pa.array(frac != 0), pc.binary_join_element_wise(text, micros, _large(".")), text)
    return pc.binary_join_element_wise(_large('"'), text, _large('"'), _large(""))


def _json_values(column: pa.Array) -> pa.Array | None:
    """One column's values as orjson writes the Python values ``to_pylist`` gives (null
    included), as large_string, for the types where Arrow can write them alike; None for the
    others. Large strings throughout: a string array holds at most 2 GiB, and a shard's
    metadata (even one column's, quoted) may be more; the row path has no such limit."""
    t = column.type
    if pa.types.is_string(t):
        # cast before combining: the chunks of one column may hold more than 2 GiB together
        out = _json_strings(column.cast(pa.large_string()).combine_chunks())
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        out = column.combine_chunks().cast(pa.large_string())
    elif pa.types.is_timestamp(t) and t.tz is None and t.unit in _TICKS:
        out = _json_timestamps(column.combine_chunks())
    else:
        return None
    return None if out is None else pc.fill_null(out, "null")


def metadata_strings(table: pa.Table, keys: list[str]) -> list[str] | None:
    """Each row's metadata (``keys`` of ``table``) as :func:`dump_metadata` writes it, built
    by column instead of by row: the JSON text of each value joined under its sorted key.
    None where a column has a type this does not write (the rows path does, row by row).
    On the 1M benchmark's shards (a timestamp and two strings) 0.04 CPU-s instead of 0.12."""
    if not keys or len(set(keys)) != len(keys):
        return None
    # joined as large_string (see _json_values): no slower than string, measured (0.041 and
    # 0.042 CPU-s a shard of the 1M benchmark, three back-to-back pairs at load 1)
    parts: list[Any] = []
    for k, key in enumerate(sorted(keys)):
        values = _json_values(table.column(key))
        if values is None:
            return None
        parts += [_large(("{" if k == 0 else ",") + orjson.dumps(key).decode() + ":"), values]
    return pc.binary_join_element_wise(*parts, _large("}"), _large("")).to_pylist()


def _large(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _metadata_keys(cmap: ColumnMap, present: list[str]) -> list[str]:
    if cmap.metadata == "none":
        return []
    if cmap.metadata == "rest":
        mapped = {cmap.text, cmap.id, cmap.source, cmap.added, cmap.created}
        return [c for c in present if c not in mapped]
    return list(cmap.metadata)


def _is_string_type(t: pa.DataType) -> bool:
    """Every Arrow type a text column may arrive in: string, large_string, string_view, and
    dictionaries of them (Spark and pandas write dictionary-encoded text)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))


def _as_string(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr if pa.types.is_string(arr.type) else arr.cast(pa.string(), safe=False)


def _pylist(column: pa.ChunkedArray, name: str, rows: list[int], bad: dict[int, str]) -> list[Any]:
    """The column as Python values; a value that cannot be converted (a timestamp beyond year
    9999, bytes that are not UTF-8 inside a nested column) makes its row bad, not the file."""
    try:
        return column.to_pylist()
    except Exception:  # noqa: BLE001 - any conversion error is a property of some rows
        pass
    out = []
    for k in range(len(column)):
        try:
            out.append(column[k].as_py())
        except Exception as exc:  # noqa: BLE001
            bad.setdefault(rows[k], _safe(f"unreadable value in column {name!r}: {type(exc).__name__}: {exc}")[:300])
            out.append(None)
    return out


def _safe(text: str) -> str:
    """``text`` with any lone surrogate escaped, so that it can be stored as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def read_parquet(shard: Shard, data: bytes, html: bool = False) -> RawRows:
    cmap = shard.columns
    try:
        # from an Arrow buffer over the bytes: through io.BytesIO every page was copied once
        # more (a 62,500-document shard of the 1M benchmark: 0.21 CPU-s to decode, 0.1 this way)
        pf = pq.ParquetFile(pa.BufferReader(data))
        table = pf.read() if shard.row_groups is None else pf.read_row_groups(list(range(*shard.row_groups)))
    except Exception as exc:
        raise InputError(f"{shard.uri}: not a readable Parquet file: {exc}") from exc
    names = table.column_names
    if cmap.text not in names:
        raise InputError(f"{shard.uri}: no text column {cmap.text!r} (columns: {', '.join(names) or 'none'})")
    text_type = table.schema.field(cmap.text).type
    html_bad: list[tuple[int, str, None]] = []
    if html and (pa.types.is_binary(text_type) or pa.types.is_large_binary(text_type)):
        start = 0
        if shard.row_groups is not None and shard.row_groups[0] > 0:
            start = sum(pf.metadata.row_group(i).num_rows for i in range(shard.row_groups[0]))
        decoded, html_bad = _decode_html_column(table.column(cmap.text), list(range(start, start + table.num_rows)))
        table = table.set_column(names.index(cmap.text), cmap.text, decoded)
        text_type = pa.string()
    if not _is_string_type(text_type):
        raise InputError(f"{shard.uri}: text column {cmap.text!r} has type {text_type}, expected a string column")
    for key in (cmap.id, cmap.source, cmap.added, cmap.created):
        if key is not None and key not in names:
            raise InputError(f"{shard.uri}: mapped column {key!r} not found (columns: {', '.join(names)})")
    meta_keys = [k for k in _metadata_keys(cmap, names) if k in names]
    start = 0
    if shard.row_groups is not None and shard.row_groups[0] > 0:
        start = sum(pf.metadata.row_group(i).num_rows for i in range(shard.row_groups[0]))
    n = table.num_rows
    rows = list(range(start, start + n))
    bad: dict[int, str] = {}  # input row -> reason, for rows whose text itself is fine
    texts, text_bad = _valid_utf8(_as_string(table.column(cmap.text)), rows)
    if cmap.text in meta_keys:
        # the text also listed as metadata: its checked values (a row with bytes that are not
        # UTF-8 is rejected for its text; unchecked, building its metadata failed the shard)
        table = table.set_column(names.index(cmap.text), cmap.text, texts)
    # the other string columns are not checked by Parquet either: a bad value makes its row
    # bad, the reason naming the first such column in the file's order (a set's order changed
    # with PYTHONHASHSEED)
    checked = {cmap.id, cmap.source, *meta_keys} - {None, cmap.text}
    for name in [c for c in names if c in checked]:
        if _is_string_type(table.schema.field(name).type):
            fixed, col_bad = _valid_utf8(_as_string(table.column(name)), rows)
            for row, reason, _ in col_bad:
                bad.setdefault(row, f"{reason} in column {name!r}")
            table = table.set_column(names.index(name), name, fixed)

    def col(key: str | None) -> list[Any]:
        return _pylist(table.column(key), key, rows, bad) if key else [None] * n

    metadata: list[str | None] = [None] * n
    built = metadata_strings(table, meta_keys)
    if built is not None:
        metadata = built
    elif meta_keys:
        values = {k: _pylist(table.column(k), k, rows, bad) for k in meta_keys}
        for k in range(n):
            metadata[k] = _dump_metadata_or_reason({key: values[key][k] for key in meta_keys}, rows[k], bad)
    ids, sources, added, created = col(cmap.id), col(cmap.source), col(cmap.added), col(cmap.created)
    text_bad = text_bad + html_bad
    seen = {b[0] for b in text_bad}
    bad_rows = list(text_bad)
    bad_rows += [(rows[i], "missing text", None) for i in np.flatnonzero(texts.is_null().to_numpy(zero_copy_only=False))
                 if rows[i] not in seen]
    seen |= {b[0] for b in bad_rows}
    if bad:
        pos = {r: k for k, r in enumerate(rows)}
        late = [(r, reason) for r, reason in sorted(bad.items()) if r not in seen]
        bad_rows += [(r, reason, texts[pos[r]].as_py()) for r, reason in late]
        mask = np.zeros(n, dtype=bool)
        mask[[pos[r] for r, _ in late]] = True
        texts = pc.if_else(pa.array(mask), pa.nulls(n, pa.string()), texts)
    return RawRows(texts, ids, sources, added, created, metadata, rows, sorted(bad_rows, key=lambda b: b[0]))


def _dump_metadata_or_reason(obj: dict[str, Any], row: int, bad: dict[int, str]) -> str | None:
    try:
        return dump_metadata(obj)
    except Exception as exc:  # noqa: BLE001 - a value no JSON encoder takes is a property of the row
        bad.setdefault(row, _safe(f"metadata cannot be stored: {type(exc).__name__}: {exc}")[:300])
        return None


def _valid_utf8(texts: pa.Array, rows: list[int]) -> tuple[pa.Array, list[tuple[int, str, str | None]]]:
    """Parquet does not check that string bytes are UTF-8: values that are not become bad
    rows (and nulls here), the rest stay."""
    try:
        texts.validate(full=True)
        return texts, []
    except pa.ArrowInvalid:
        pass
    data = texts.cast(pa.binary()).to_pylist()
    bad, clean = [], []
    for k, value in enumerate(data):
        try:
            clean.append(value.decode("utf-8") if value is not None else None)
        except UnicodeDecodeError as exc:
            bad.append((rows[k], f"invalid UTF-8 at byte {exc.start}", value.decode("utf-8", "replace")))
            clean.append(None)
    return pa.array(clean, pa.string()), bad


_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


def decompress(shard: Shard, data: bytes) -> bytes:
    """Decompressed by what the bytes are (their magic number), whatever the name says; a
    name that promises a compression the bytes do not have is an error."""
    lower = shard.uri.lower()
    named = "gzip" if lower.endswith(".gz") else "zstd" if lower.endswith((".zst", ".zstd")) else None
    kind = next((k for magic, k in _MAGIC if data.startswith(magic)), None)
    if named is not None and kind is None:
        raise InputError(f"{shard.uri}: corrupt compressed stream: named like {named} data, but it is not "
                         f"(starts with {data[:8]!r})")
    try:
        if kind == "gzip":
            return gzip.decompress(data)
        if kind == "zstd":
            return _zstd_frames(data)
        if kind == "bz2":
            import bz2

            return bz2.decompress(data)
        if kind == "xz":
            import lzma

            return lzma.decompress(data)
    except InputError as exc:
        raise InputError(f"{shard.uri}: {exc}") from None
    except Exception as exc:
        raise InputError(f"{shard.uri}: corrupt compressed stream: {exc}") from exc
    return data


# Byte-order marks, longest first (UTF-32 LE starts like UTF-16 LE).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def as_utf8(shard: Shard, data: bytes) -> bytes:
    """The file's text as UTF-8 without a byte-order mark. The encoding comes from the bytes:
    a BOM, else RFC 4627's rule (JSON starts with an ASCII character, so the NUL bytes of
    its first four bytes tell UTF-16 and UTF-32 and their byte order)."""
    encoding, skip = None, 0
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding, skip = name, len(bom)
            break
    if encoding is None and len(data) >= 4 and b"\x00" in data[:4]:
        head = data[:4]
        encoding = ("utf-32-be" if head[:3] == b"\x00\x00\x00" else "utf-32-le" if head[1:] == b"\x00\x00\x00"
                    else "utf-16-be" if head[0] == 0 and head[2] == 0 else "utf-16-le" if head[1] == 0 and head[3] == 0
                    else None)
    if encoding is None or encoding == "utf-8":
        return data[skip:]
    try:
        return data[skip:].decode(encoding).encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise InputError(f"{shard.uri}: not valid {encoding.upper()} text (from its first bytes) at byte "
                         f"{getattr(exc, 'start', '?')}") from None


def _zstd_frames(data: bytes) -> bytes:
    """Every frame of a zstd stream; a frame cut short is an error, not a silent short read."""
    parts, dctx = [], zstandard.ZstdDecompressor()
    while data:
        obj = dctx.decompressobj()
        parts.append(obj.decompress(data))
        if not obj.eof:
            raise InputError("corrupt compressed stream: zstd frame is truncated")
        data = obj.unused_data
    return b"".join(parts)


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(obj: dict[str, Any]) -> str | None:
    """The top-level field (``field 'x'``) holding a lone surrogate anywhere inside it, in a
    value or a key, or None. Iterative: metadata may be nested a thousand levels deep."""
    for key, value in obj.items():
        stack = [key, value]
        while stack:
            v = stack.pop()
            if isinstance(v, str):
                if _SURROGATE.search(v):
                    return f"field {_safe(key)[:100]!r}"
            elif isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
    return None


def json_document(data: bytes) -> Any:
    """The whole file as one JSON value when it is a JSON array (or one pretty-printed
    object) rather than JSON Lines; None otherwise."""
    head = data[:4096].lstrip()
    first_line = data.split(b"\n", 1)[0]
    if not head.startswith((b"[", b"{")) or (head.startswith(b"{") and _parses(first_line)):
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, list | dict) else None


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except (ValueError, RecursionError):
        return False


def read_jsonl(shard: Shard, data: bytes) -> RawRows:
    raw = RawRows([], [], [], [], [], [], [], [])
    data = as_utf8(shard, decompress(shard, data))
    whole = json_document(data)
    if whole is not None:  # a .json file holding an array: each element is a row
        rows = whole if isinstance(whole, list) else [whole]
        maybe = bool(_SURROGATE_ESCAPE.search(data.decode("utf-8", "replace")))
        for k, obj in enumerate(rows):
            _add_object(raw, shard.columns, k, obj, _safe(json.dumps(obj, ensure_ascii=False, default=str)), maybe)
        raw.text = pa.array(raw.text, pa.string())
        return raw
    for lineno, line in enumerate(data.split(b"\n")):
        if line.startswith(codecs.BOM_UTF8):  # files concatenated with their marks
            line = line[3:]
        if not line.strip():
            continue
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw.bad_rows.append((lineno, f"invalid UTF-8 at byte {exc.start}", line.decode("utf-8", "replace")))
            continue
        try:
            obj = json.loads(decoded)
        except ValueError as exc:
            raw.bad_rows.append((lineno, f"invalid JSON: {exc.msg} at column {exc.colno}", decoded))
            continue
        except RecursionError:
            raw.bad_rows.append((lineno, "invalid JSON: nested too deeply", decoded))
            continue
        _add_object(raw, shard.columns, lineno, obj, decoded, bool(_SURROGATE_ESCAPE.search(decoded)))
    raw.text = pa.array(raw.text, pa.string())
    return raw


def _add_object(raw: RawRows, cmap: ColumnMap, row: int, obj: Any, decoded: str, maybe_surrogate: bool) -> None:
    """One parsed row: a document, or a bad row with its reason."""
    if not isinstance(obj, dict):
        raw.bad_rows.append((row, f"not a JSON object ({type(obj).__name__})", decoded))
        return
    text = obj.get(cmap.text)
    if text is None:
        raw.bad_rows.append((row, "missing text", decoded))
        return
    if not isinstance(text, str):
        raw.bad_rows.append((row, f"text is not a string ({type(text).__name__})", decoded))
        return
    # a "\ud800" escape without its pair decodes to a string no UTF-8 writer accepts
    where = _lone_surrogate(obj) if maybe_surrogate else None
    if where is not None:
        raw.bad_rows.append((row, f"invalid Unicode: lone surrogate in {where}", decoded))
        return
    keys = _metadata_keys(cmap, list(obj))
    bad: dict[int, str] = {}
    metadata = _dump_metadata_or_reason({k: obj[k] for k in keys if k in obj}, row, bad)
    if bad:
        raw.bad_rows.append((row, bad[row], decoded))
        return
    raw.text.append(text)
    raw.ids.append(obj.get(cmap.id) if cmap.id else None)
    raw.sources.append(obj.get(cmap.source) if cmap.source else None)
    raw.added.append(obj.get(cmap.added) if cmap.added else None)
    raw.created.append(obj.get(cmap.created) if cmap.created else None)
    raw.metadata.append(metadata)
    raw.rows.append(row)


# -- normalizing ----------------------------------------------------------------------------

def _normalize_documents(texts: pa.Array, pages: np.ndarray, form: str) -> pa.Array:
    """Every text normalized (``form``, LF line ends) but the pages' HTML: the extract stage
    normalizes the text it extracts, the parser reads any line ends, and ``refinery explain``
    shows the page from its input file. Normalizing a page costs about 1.6 ms (of 272 KB; the
    extraction itself 3.5 ms)."""
    if not pages.any():
        return normalize_texts(texts, form)
    if pages.all():
        return texts
    rest = np.flatnonzero(~pages)
    return pc.replace_with_mask(texts, pa.array(~pages), normalize_texts(texts.take(pa.array(rest)), form))


def _to_timestamp(values: list[Any]) -> pa.Array:
    """Timestamps from datetimes, ISO strings or epoch seconds; what cannot be parsed is null."""
    if values.count(None) == len(values):
        # an unmapped column (the usual case) needs no loop over its Nones (about 0.01 CPU-s per
        # 62,500, twice per shard: added, created)
        return pa.nulls(len(values), TIMESTAMP)
    out: list[datetime | None] = []
    for v in values:
        ts = None
        if isinstance(v, datetime):
            ts = v if v.tzinfo else v.replace(tzinfo=UTC)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            try:
                ts = datetime.fromtimestamp(v, tz=UTC)
            except (OverflowError, OSError, ValueError):
                ts = None
        elif isinstance(v, str) and v:
            try:
                ts = datetime.fromisoformat(v.replace("Z", "+00:00"))
                ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
            except ValueError:
                ts = None
        out.append(ts)
    return pa.array(out, TIMESTAMP)


def stable_id(source: str, source_id: Any, text: str) -> str:
    """Stable across releases: the source and its own id, else the source and the text."""
    if source_id is not None and source_id != "":
        key = f"id\x00{source}\x00{source_id}"
    else:
        key = f"text\x00{source}\x00{text}"
    return xxhash.xxh3_128_hexdigest(key.encode("utf-8"))


def ingest_shard(shard: Shard, cfg: IngestConfig, dedup_key: str | None, release: str,
                 added_default: datetime, tokenizer: TokenizerConfig | None = None) -> IngestResult:
    """Read and validate one shard. Raises :class:`InputError` only when the file as a whole
    cannot be used; bad rows become rejects with a reason. ``dedup_key``: the exact-dedup key
    mode whose hash fills ``content_hash``; None (exact dedup off) leaves it null, since
    nothing else reads it and it costs a pass over every text. ``tokenizer``: when ingest is
    the release's last map step, the release's tokenizer, whose tokens are counted in the pass
    that counts the words (``model_tokens``)."""
    data, file_info = read_bytes(shard, WEB_RANGE_SLACK if shard.byte_range else 0)
    # a Parquet file is read as one whatever its name says (both ends carry the magic)
    parquet = shard.format == "parquet" or (data[:4] == b"PAR1" and data[-4:] == b"PAR1")
    html_column = getattr(shard.columns, "html", None)
    if shard.format in ("warc", "wet") and not parquet:
        raw = _read_web(shard, data, file_info)
    elif html_column:
        raw = _read_html_column(shard, data, parquet, html_column)
    elif parquet:
        raw = read_parquet(shard, data)
    else:
        raw = read_jsonl(shard, data)

    valid = raw.text.is_valid().to_numpy(zero_copy_only=False)
    keep = np.flatnonzero(valid).tolist()
    pages = np.asarray(raw.pages, dtype=bool)[valid] if raw.pages is not None else np.zeros(len(keep), dtype=bool)
    texts = _normalize_documents(raw.text if len(keep) == len(valid) else raw.text.filter(pa.array(valid)), pages,
                                 cfg.unicode_form)
    # a row's own source is data: kept as it is in the document, encoded where it names a
    # folder (tasks.layout.component); missing or empty means the input's source
    sources = [shard.source if raw.sources[i] is None or raw.sources[i] == "" else str(raw.sources[i]) for i in keep]
    ids_src = [raw.ids[i] for i in keep]
    rows = [raw.rows[i] for i in keep]
    ordinals = [raw.ordinals[i] for i in keep] if raw.ordinals is not None else rows

    reasons: list[str | None] = [None] * len(keep)
    # a page's HTML is not its text: the extract stage applies max_chars to what it extracts;
    # a WARC's text records (WET conversions) are text and are checked here
    if cfg.max_chars is not None:
        for k in np.flatnonzero((pc.utf8_length(texts).to_numpy() > cfg.max_chars) & ~pages):
            reasons[k] = f"longer than max_chars ({len(texts[int(k)].as_py())} > {cfg.max_chars})"
    model_tokens, tokenizer_name = None, None
    if tokenizer is not None:
        from tasks.tokens import release_counts_and_words

        words, model_tokens, tokenizer_name = release_counts_and_words(tokenizer, texts)
    else:
        words = word_counts(texts)
    # nothing but whitespace, or only invisible characters (zero-width spaces and joiners,
    # byte-order marks, soft hyphens, controls), which the word count sees as a word
    blank = words.to_numpy() == 0
    if len(texts):
        blank |= pc.match_substring_regex(texts, _INVISIBLE_ONLY).to_numpy(zero_copy_only=False)
    for k in np.flatnonzero(blank):
        reasons[k] = "empty text"

    by_text = [k for k, i in enumerate(ids_src) if i is None or i == ""]  # ids from the text itself
    text_of = dict(zip(by_text, texts.take(pa.array(by_text, pa.int64())).to_pylist(), strict=True))
    for k in by_text:
        if pages[k]:  # an id from a page's text is from its normalized form, as before pages were left alone
            text_of[k] = normalize_text(text_of[k], cfg.unicode_form)
    ids = [stable_id(s, i, text_of.get(k, "")) for k, (s, i) in enumerate(zip(sources, ids_src, strict=True))]
    first_row: dict[str, int] = {}
    for k, doc_id in enumerate(ids):
        # the same source id twice would give two documents one id: the later rows are
        # rejected (across shards: tasks.steps.id_reduce_step)
        if reasons[k] is not None or ids_src[k] is None or ids_src[k] == "":
            continue
        if doc_id in first_row:
            reasons[k] = f"duplicate id {str(ids_src[k])!r} (first at row {rows[first_row[doc_id]]})"
        else:
            first_row[doc_id] = k
    hashes: list[bytes | None] = [None] * len(keep)
    if dedup_key is not None:
        # a page's HTML gets no exact-dedup key: the extract stage comes next, and exact dedup
        # keys the text it extracts (tasks.dedup.exact_steps.exact_map_outputs)
        plain = np.flatnonzero(~pages).tolist()
        for k, t in zip(plain, texts.take(pa.array(plain, pa.int64())).to_pylist(), strict=True):
            hashes[k] = xxhash.xxh3_128_digest(content_key(t, dedup_key).encode("utf-8"))
    added = _to_timestamp([raw.added[i] for i in keep])
    added = pc.fill_null(added, pa.scalar(added_default, TIMESTAMP))
    n = len(keep)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": texts,
            "source": pa.array(sources, pa.string()),
            "added": added,
            "created": _to_timestamp([raw.created[i] for i in keep]),
            "metadata": pa.array([raw.metadata[i] for i in keep], pa.string()),
            "version": pa.array([release] * n, pa.string()),
            "source_id": pa.array([None if i is None or i == "" else str(i) for i in ids_src], pa.string()),
            "content_hash": pa.array(hashes, pa.binary(16)),
            "order": pa.array([(shard.index << 32) | r for r in ordinals], pa.int64()),
            "input_row": pa.array(rows, pa.int64()),
            "input_uri": pa.array([public_url(shard.uri)] * n, pa.string()),
        },
        schema=WORK_SCHEMA,
    )
    bad = np.fromiter((r is not None for r in reasons), bool, len(reasons))
    parse_rejects = _parse_rejects(raw.bad_rows, shard, release)
    rejects_parts = [parse_rejects]
    work = table
    # most shards reject no row here: their tables stay as they are (a filter copies every text)
    if bad.any():
        bad_mask = pa.array(bad)
        work = table.filter(pc.invert(bad_mask))
        rejects_parts.append(
            to_rejects(table.filter(bad_mask), "ingest", pa.array([r for r in reasons if r is not None], pa.string()))
        )
        words = words.filter(pc.invert(bad_mask))
        if model_tokens is not None:
            model_tokens = model_tokens[~bad]
    rejects = pa.concat_tables(rejects_parts)
    reason_counts = Counter(reason_key(r) for r in rejects.column("reason").to_pylist())
    stats = {
        "file": file_info,
        # a Parquet null text is both a row and a bad row: count each input row once
        "rows_read": len(set(raw.rows) | {b[0] for b in raw.bad_rows}),
        "docs_out": work.num_rows,
        "rejected": dict(sorted(reason_counts.items())),
    }
    if raw.skipped:
        stats["records_skipped"] = dict(sorted(raw.skipped.items()))  # warcinfo, request, metadata...
    return IngestResult(work, rejects, words, stats, model_tokens, tokenizer_name)


def _parse_rejects(bad_rows: list[tuple[int, str, str | None]], shard: Shard, release: str) -> pa.Table:
    n = len(bad_rows)
    docs = pa.table(
        {
            "id": pa.array(
                [xxhash.xxh3_128_hexdigest(f"row\x00{shard.uri}\x00{r}".encode()) for r, _, _ in bad_rows], pa.string()
            ),
            "text": pa.array([t for _, _, t in bad_rows], pa.string()),
            "source": pa.array([shard.source] * n, pa.string()),
            "version": pa.array([release] * n, pa.string()),
            "input_uri": pa.array([public_url(shard.uri)] * n, pa.string()),
            "input_row": pa.array([r for r, _, _ in bad_rows], pa.int64()),
        }
    )
    return to_rejects(docs, "ingest", pa.array([reason for _, reason, _ in bad_rows], pa.string()))


def read_texts(spec: InputSpec, endpoint_url: str | None = None, limit: int | None = None) -> list[str]:
    """The normalized texts of one input (every file of it), read exactly as a release reads
    them; used where a whole run is not wanted, e.g. classifier training data."""
    _, urls, fs = expand_input(spec, endpoint_url)
    root = input_root(spec, endpoint_url)
    texts: list[str] = []
    epoch = datetime.fromtimestamp(0, UTC)
    for k, url in enumerate(urls):
        fmt = format_of(url, spec.format)
        shard = Shard(k, url, fmt, "training", spec.columns, None, endpoint_url, root)
        texts.extend(ingest_shard(shard, IngestConfig(), None, "training", epoch).work.column("text").to_pylist())
        if limit is not None and len(texts) >= limit:
            return texts[:limit]
    return texts
