"""Every path under a corpus root, in one place (DESIGN §2). Deterministic per
(release, stage, shard), so that reruns find and skip what is already done."""

from __future__ import annotations

CATALOG = "catalog.json"


def release_dir(release: str) -> str:
    return f"releases/{release}"


def manifest_path(release: str) -> str:
    return f"releases/{release}/manifest.json"


def report_path(release: str) -> str:
    return f"releases/{release}/report.html"


def urls_path(release: str) -> str:
    return f"releases/{release}/urls.txt"


def documents_path(release: str, source: str, shard: str) -> str:
    return f"releases/{release}/documents/{source}/part-{shard}.parquet"


def attributes_path(release: str, tagger_set: str, source: str, shard: str) -> str:
    return f"releases/{release}/attributes/{tagger_set}/{source}/part-{shard}.parquet"


def rejects_path(release: str, stage: str, source: str, shard: str) -> str:
    return f"releases/{release}/rejects/{stage}/{source}/part-{shard}.parquet"


def changes_path(release: str, stage: str, source: str, shard: str) -> str:
    """The text a modifying stage started from, for each document it changed."""
    return f"releases/{release}/changes/{stage}/{source}/part-{shard}.parquet"


def is_scratch(rel: str) -> bool:
    """A run's own intermediates and markers: never published, read by the run itself."""
    return rel.startswith("state/work/")


def work_dir(release: str) -> str:
    return f"state/work/{release}"


def run_record_path(release: str) -> str:
    return f"state/work/{release}/run.json"


def run_log_path(release: str) -> str:
    """The terminal run's Prefect and Ray log lines (`refinery run` without -v)."""
    return f"state/logs/{release}.log"


def work_path(release: str, stage: str, shard: str) -> str:
    return f"state/work/{release}/{stage}/part-{shard}.parquet"


def marker_path(release: str, stage: str, shard: str) -> str:
    return f"state/work/{release}/{stage}/part-{shard}.done.json"


def shuffle_path(release: str, stage: str, shard: str, bucket: int) -> str:
    return f"state/work/{release}/{stage}/shuffle/bucket-{bucket:05d}/part-{shard}.parquet"


def shuffle_dir(release: str, stage: str, bucket: int) -> str:
    return f"state/work/{release}/{stage}/shuffle/bucket-{bucket:05d}"
