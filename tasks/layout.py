"""Every path under a corpus root, in one place (DESIGN §2). Deterministic per
(release, stage, shard), so that reruns find and skip what is already done."""

from __future__ import annotations

import hashlib
import re
import unicodedata

CATALOG = "catalog.json"

# A name that is used as a path component as it is. Config values must match it; values from
# data (a row's `source`) that do not are encoded by :func:`component`.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Device names Windows (and SMB shares, and tools that copy a corpus there) refuse as a file
# name, with or without an extension.
_WINDOWS_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.I)
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


class PathError(ValueError):
    """A relative path would leave its root (``..``, NUL) or is not a path at all."""


def name_problem(value: object) -> str | None:
    """Why ``value`` cannot be one path component as it is, or None when it can."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string"
    if not NAME_RE.fullmatch(value):
        return f"must match {NAME_RE.pattern} (no slashes)"
    if ".." in value:
        return "must not contain '..'"
    if value.endswith("."):
        return "must not end with a dot"
    if _WINDOWS_RESERVED.fullmatch(value):
        return "is a reserved device name on Windows"
    return None


class Encoded(str):
    """A name :func:`component` encodes even when it is safe: for names that are distinct here
    but one on a filesystem that folds case or normalizes Unicode (``Web`` and ``web`` on macOS
    and Windows), which :func:`tasks.stepkit.write_by_source` finds among one write's sources."""


def fold_key(value: str) -> str:
    """What a case-insensitive, Unicode-normalizing filesystem sees of a component."""
    return unicodedata.normalize("NFC", component(value)).casefold()


def component(value: str) -> str:
    """``value`` as one path component that stays where it is put, on POSIX, Windows, macOS
    and S3: the value itself when :func:`name_problem` finds nothing, else ``_`` + an ASCII
    slug of it + ``-`` + 16 hex digits of the SHA-256 of its exact code points.

    Injective in practice: safe names never start with ``_``; two encoded values share a
    component only if they share 64 bits of SHA-256. The hash is of the code points as given
    (lone surrogates included), so NFC and NFD spellings of a name stay two names, and a
    filesystem that normalizes Unicode (macOS) or folds case cannot merge them.
    """
    if not isinstance(value, str):
        value = str(value)
    if name_problem(value) is None and not isinstance(value, Encoded):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    ascii_ = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    slug = _SLUG.sub("_", ascii_).strip("_")[:48]
    return f"_{slug}-{digest}"


def check_relative(rel: str) -> str:
    """``rel`` if it is a relative path that stays under its root, else :class:`PathError`.
    The last line of defence under every read and write of :class:`tasks.storage.Storage`:
    a path from a hostile manifest or a name that skipped :func:`component` stops here."""
    if not isinstance(rel, str):
        raise PathError(f"path {rel!r} is not a string")
    if "\x00" in rel:
        raise PathError(f"path {rel!r} contains a NUL character")
    parts = rel.strip("/").split("/")
    if any(p in ("..", ".") for p in parts):
        raise PathError(f"path {rel!r} leaves its root (a '..' or '.' component)")
    return rel


def _c(*names: str) -> list[str]:
    return [component(n) for n in names]


def release_dir(release: str) -> str:
    return f"releases/{component(release)}"


def manifest_path(release: str) -> str:
    return f"{release_dir(release)}/manifest.json"


def report_path(release: str) -> str:
    return f"{release_dir(release)}/report.html"


def urls_path(release: str) -> str:
    return f"{release_dir(release)}/urls.txt"


def documents_path(release: str, source: str, shard: str) -> str:
    r, s, n = _c(release, source, f"part-{shard}")
    return f"releases/{r}/documents/{s}/{n}.parquet"


def attributes_dir(release: str) -> str:
    return f"{release_dir(release)}/attributes"


def attributes_path(release: str, tagger_set: str, source: str, shard: str) -> str:
    r, t, s, n = _c(release, tagger_set, source, f"part-{shard}")
    return f"releases/{r}/attributes/{t}/{s}/{n}.parquet"


def rejects_path(release: str, stage: str, source: str, shard: str) -> str:
    r, t, s, n = _c(release, stage, source, f"part-{shard}")
    return f"releases/{r}/rejects/{t}/{s}/{n}.parquet"


def changes_path(release: str, stage: str, source: str, shard: str) -> str:
    """The text a modifying stage started from, for each document it changed."""
    r, t, s, n = _c(release, stage, source, f"part-{shard}")
    return f"releases/{r}/changes/{t}/{s}/{n}.parquet"


def is_scratch(rel: str) -> bool:
    """A run's own intermediates and markers: never published, read by the run itself."""
    return rel.startswith("state/work/")


def work_dir(release: str) -> str:
    return f"state/work/{component(release)}"


def run_record_path(release: str) -> str:
    return f"{work_dir(release)}/run.json"


def run_log_path(release: str) -> str:
    """The terminal run's Prefect and Ray log lines (`refinery run` without -v)."""
    return f"state/logs/{release}.log"


def work_path(release: str, stage: str, shard: str) -> str:
    r, t, n = _c(release, stage, f"part-{shard}")
    return f"state/work/{r}/{t}/{n}.parquet"


def marker_path(release: str, stage: str, shard: str) -> str:
    r, t, n = _c(release, stage, f"part-{shard}")
    return f"state/work/{r}/{t}/{n}.done.json"


def shuffle_path(release: str, stage: str, shard: str, bucket: int) -> str:
    return f"{shuffle_dir(release, stage, bucket)}/{component(f'part-{shard}')}.parquet"


def shuffle_dir(release: str, stage: str, bucket: int) -> str:
    r, t = _c(release, stage)
    return f"state/work/{r}/{t}/shuffle/bucket-{bucket:05d}"


def work_file(release: str, name: str) -> str:
    """A run-wide file of the release's state (the pinned near-dedup index view)."""
    return f"{work_dir(release)}/{component(name)}"


def work_stage_dir(release: str, stage: str) -> str:
    """Every shard's work table and marker of one step."""
    return f"{work_dir(release)}/{component(stage)}"


def attributes_set_dir(release: str, tagger_set: str) -> str:
    return f"{attributes_dir(release)}/{component(tagger_set)}"


NEAR_INDEX_ROOT = "state/near_index"  # the cross-release near-duplicate index (tasks/dedup/index.py)
MANIFEST_GLOB = "releases/*/manifest.json"


def llm_cache_path(key: str) -> str:
    """One cached model response, by the sha256 of its request."""
    return f"state/llm_cache/{key[:2]}/{component(key)}.json"
