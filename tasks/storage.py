"""The one storage layer: plain paths, ``file://`` and ``s3://`` through fsspec.

Everything the pipeline writes goes through :class:`Storage`, so atomicity, checksums and
credential handling live in exactly one place. Credentials are never part of a
:class:`StorageSpec` (which is shipped to Ray workers and recorded in Prefect and in the
manifest); they come from the usual AWS environment variables of each process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import layout

# Parquet settings are fixed so that rewriting the same table gives the same bytes.
PARQUET_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "row_group_size": 64 * 1024,
}
# A run's own intermediates (under state/work/) are read once or twice by the run itself:
# written for speed (zstd level 1 writes the benchmark corpus 2x faster than level 3, and
# dictionaries never pay off on texts, hashes and signatures).
SCRATCH_WRITE_OPTIONS: dict[str, Any] = {**PARQUET_WRITE_OPTIONS, "compression_level": 1, "use_dictionary": False}


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URL."""


@dataclass(frozen=True)
class StorageSpec:
    """Where a corpus root lives, without secrets: safe to log, pickle and record."""

    root: str
    endpoint_url: str | None = None
    region: str | None = None
    # scratch Parquet under state/work/: "none", "zstd" (level 1), or "auto" (none on a local
    # disk, zstd on object storage: tasks.config.StorageConfig.scratch_compression)
    scratch_compression: str = "auto"

    def open(self) -> Storage:
        return Storage(self)


@dataclass(frozen=True)
class FileInfo:
    """What the manifest records about one written file."""

    path: str
    rows: int
    bytes: int
    content: bytes | pa.Buffer = field(repr=False, compare=False)

    @cached_property
    def sha256(self) -> str:
        # on demand: most files written are a run's scratch, whose digest nobody reads (hashing
        # a 62,500-document shard's near-dedup scratch cost 0.02 CPU-s, measured)
        return sha256_bytes(self.content)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}


def endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def filesystem_for(url: str, endpoint_url: str | None = None, region: str | None = None):
    """An fsspec filesystem and the protocol-less path for ``url``."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    kwargs: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        client_kwargs: dict[str, Any] = {}
        endpoint = endpoint_url or endpoint_from_env()
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        if region or os.environ.get("AWS_DEFAULT_REGION"):
            client_kwargs["region_name"] = region or os.environ.get("AWS_DEFAULT_REGION")
        # Listings must not be cached: other processes (Ray workers) write concurrently.
        kwargs = {"client_kwargs": client_kwargs, "use_listings_cache": False}
    fs, path = fsspec.core.url_to_fs(url, **kwargs)
    return fs, path


def sha256_bytes(data: bytes | pa.Buffer) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys, so equal content gives equal bytes."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n").encode()


# Scratch written as it is: on a local disk (a work table of the 1M benchmark's 62,500
# documents: 0.09 CPU-s to write and 0.03 to read, against 0.34 and 0.16 with zstd level 1,
# for 102 MB instead of 47; a run reads most work tables twice), and tables of random bits
# wherever they go (MinHash signatures: zstd saved 11% of their bytes for 80% of the time
# to write them). Scratch that crosses a network (S3) keeps zstd level 1.
UNCOMPRESSED_SCRATCH_OPTIONS: dict[str, Any] = {
    **{k: v for k, v in SCRATCH_WRITE_OPTIONS.items() if k != "compression_level"}, "compression": "none"}


def table_to_parquet_bytes(table: pa.Table, scratch: bool = False, uncompressed: bool = False) -> bytes:
    """``uncompressed``: a scratch table written without a codec (published files keep theirs)."""
    return parquet_buffer(table, scratch, uncompressed).to_pybytes()


def parquet_buffer(table: pa.Table, scratch: bool = False, uncompressed: bool = False) -> pa.Buffer:
    """:func:`table_to_parquet_bytes` as the Arrow buffer the writer filled: written and hashed
    as it is (turning a work table's 102 MB into ``bytes`` cost 0.065 CPU-s, twice the time to
    encode it uncompressed, measured)."""
    sink = pa.BufferOutputStream()
    options = (UNCOMPRESSED_SCRATCH_OPTIONS if uncompressed else SCRATCH_WRITE_OPTIONS) if scratch \
        else PARQUET_WRITE_OPTIONS
    pq.write_table(table, sink, **options)
    return sink.getvalue()


# False inside steps that run side by side in threads of one task (tasks.stepkit.in_threads):
# they decode Parquet on their own thread, so that the thread's CPU clock, which their markers
# record, counts the decoding (Arrow's pool threads would do it unseen), while the steps' own
# threads already keep the cores busy
ARROW_POOL: ContextVar[bool] = ContextVar("refinery_arrow_pool", default=True)


class Storage:
    """A corpus root. Paths given to methods are relative to the root."""

    def __init__(self, spec: StorageSpec):
        self.spec = spec
        self.fs, self.root_path = filesystem_for(spec.root, spec.endpoint_url, spec.region)
        self.root_path = self.root_path.rstrip("/")
        self.is_local = "file" in _protocols(self.fs)

    # -- naming ---------------------------------------------------------------------------
    def full(self, rel: str) -> str:
        """The filesystem path of ``rel``; a path that would leave the root is refused
        (:class:`StorageError`), so no name from data or a manifest can reach outside it."""
        try:
            layout.check_relative(rel)
        except layout.PathError as exc:
            raise StorageError(f"{self.url()}: {exc}") from None
        return f"{self.root_path}/{rel.lstrip('/')}" if rel else self.root_path

    def url(self, rel: str = "") -> str:
        """A URL for people and for other tools (never carries credentials)."""
        full = f"{self.root_path}/{rel.lstrip('/')}" if rel else self.root_path
        if self.is_local:
            return full
        return f"{_protocols(self.fs)[0]}://{full}"

    # -- reading --------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.full(rel))

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self.full(rel))
        except FileNotFoundError:
            raise
        except Exception as exc:  # the URL is the useful part of the message
            raise StorageError(f"cannot read {self.url(rel)}: {exc}") from exc

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def read_json_or_none(self, rel: str) -> Any:
        try:
            return self.read_json(rel)
        except FileNotFoundError:
            return None

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        # from an Arrow buffer, not a Python file object: through io.BytesIO every page was
        # copied once more. A local file is mapped: its uncompressed pages become the table's
        # columns without a copy (a 62,500-document scratch work table: 0.035 CPU-s, against
        # 0.09 read into bytes first and 0.14 through io.BytesIO; zstd level 1: 0.16 through
        # io.BytesIO). Files are replaced by renaming, never changed in place, so a mapping
        # never sees a half-written file.
        if self.is_local:
            full = self.full(rel)
            try:
                source = pa.memory_map(full)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise StorageError(f"cannot read {self.url(rel)}: {exc}") from exc
            return pq.read_table(source, columns=columns, use_threads=ARROW_POOL.get())
        return pq.read_table(pa.BufferReader(self.read_bytes(rel)), columns=columns, use_threads=ARROW_POOL.get())

    def list(self, rel_dir: str, suffix: str = "") -> list[str]:
        """Relative paths of the files under ``rel_dir`` (recursive), sorted."""
        base = self.full(rel_dir)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        prefix = self.root_path + "/"
        out = [p[len(prefix):] if p.startswith(prefix) else p for p in found]
        return sorted(p for p in out if p.endswith(suffix) and ".tmp-" not in p)

    # -- writing --------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes | pa.Buffer) -> None:
        """Write atomically: readers see the old object or the whole new one, never a part.

        Local files go to a temporary name in the same folder and are renamed over the target;
        an S3 PUT is already all-or-nothing, so it is written in one request.
        """
        full = self.full(rel)
        try:
            if self.is_local:
                folder = os.path.dirname(full)
                os.makedirs(folder, exist_ok=True)
                tmp = f"{full}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, full)
            else:
                self.fs.pipe_file(full, data if isinstance(data, bytes) else data.to_pybytes())
        except Exception as exc:
            raise StorageError(f"cannot write {self.url(rel)}: {exc}") from exc

    def copy(self, src: str, dst: str) -> None:
        """``dst`` with ``src``'s bytes, atomically as :meth:`write_bytes`. Local files are
        hard-linked (no byte written, no space used: every write here replaces a file by
        renaming a new one over it, never changing one in place, so the two names cannot
        drift apart); where a link cannot be made, the bytes are copied. S3 copies on the server."""
        if not self.is_local:
            try:
                self.fs.copy(self.full(src), self.full(dst))
            except Exception as exc:
                raise StorageError(f"cannot copy {self.url(src)} to {self.url(dst)}: {exc}") from exc
            return
        full = self.full(dst)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with contextlib.suppress(OSError):
            if os.path.samefile(self.full(src), full):
                return  # a rerun after a crash between this copy and the step's marker
        tmp = f"{full}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.link(self.full(src), tmp)
        except OSError:  # another filesystem, or one without hard links
            self.write_bytes(dst, self.read_bytes(src))
            return
        try:
            os.replace(tmp, full)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageError(f"cannot copy {self.url(src)} to {self.url(dst)}: {exc}") from exc

    def write_json(self, rel: str, obj: Any) -> FileInfo:
        data = canonical_json(obj)
        self.write_bytes(rel, data)
        return FileInfo(rel, 0, len(data), data)

    def write_parquet(self, rel: str, table: pa.Table, incompressible: bool = False) -> FileInfo:
        """``incompressible``: a scratch table of random bits, written uncompressed wherever it
        goes (a published file keeps the fixed settings whatever it holds)."""
        mode = self.spec.scratch_compression
        uncompressed = incompressible or mode == "none" or (mode == "auto" and self.is_local)
        data = parquet_buffer(table, scratch=layout.is_scratch(rel), uncompressed=uncompressed)
        self.write_bytes(rel, data)
        return FileInfo(rel, table.num_rows, data.size, data)

    def delete(self, rel: str, recursive: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.full(rel), recursive=recursive)

    def sha256(self, rel: str) -> str:
        return sha256_bytes(self.read_bytes(rel))


def _protocols(fs) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def public_url(uri: str) -> str:
    """``uri`` as it may be recorded in a release: without a ``user:secret@`` part and without a
    query string (presigned URLs carry their signature there); reading still uses the full URL."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in uri or ("@" not in uri and "?" not in uri):
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
