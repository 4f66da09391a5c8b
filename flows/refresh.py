"""The ``refresh`` flow: an incremental release from the input partitions no earlier release
consumed. Each input of the config names a partitioned root (its immediate children, folders
or files, are the partitions); near duplicates of earlier releases go through the
cross-release index."""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger

from flows.curate import ReleaseError, refuse_parameter_secrets, run_release, storage_spec
from tasks.config import InputSpec, PipelineConfig
from tasks.ingest import source_name
from tasks.manifest import ManifestError
from tasks.parallel import make_task_runner
from tasks.publish import read_catalog, read_manifest_file
from tasks.storage import Storage, filesystem_for


def list_partitions(spec: InputSpec, endpoint_url: str | None = None) -> list[str]:
    fs, base = filesystem_for(spec.uri, endpoint_url)
    if not fs.isdir(base):
        raise ReleaseError(f"{spec.uri}: a refresh input must be a folder of partitions")
    protocol = spec.uri.split("://", 1)[0] if "://" in spec.uri else None
    children = sorted(p for p in fs.ls(base, detail=False) if not p.rsplit("/", 1)[-1].startswith((".", "_")))
    return [f"{protocol}://{p}" if protocol and protocol != "file" else p for p in children]


def consumed_inputs(storage: Storage) -> set[str]:
    """Every input file any committed release read."""
    out: set[str] = set()
    for entry in read_catalog(storage)["releases"]:
        try:
            out |= {i["uri"] for i in read_manifest_file(storage, entry["manifest"])["inputs"]}
        except (FileNotFoundError, ManifestError) as exc:
            # its inputs cannot be known: curating them again is the safe side (dedup against
            # earlier releases still applies), losing them is not
            logging.getLogger(__name__).warning("refresh: %s", exc)
    return out


def partition_inputs(config: PipelineConfig) -> list[tuple[InputSpec, str]]:
    """One input spec per partition of every configured root, with the partition's name; the
    source keeps the root's name."""
    out = []
    for spec in config.inputs:
        fs, base = filesystem_for(spec.uri, config.storage.endpoint_url)
        source = spec.source or source_name(spec, fs, base, True)
        for uri in list_partitions(spec, config.storage.endpoint_url):
            out.append((spec.model_copy(update={"uri": uri, "source": source}), uri.rstrip("/").rsplit("/", 1)[-1]))
    return out


def new_partitions(config: PipelineConfig, storage: Storage) -> list[InputSpec]:
    consumed = consumed_inputs(storage)
    return [spec for spec, _ in partition_inputs(config)
            if not any(u == spec.uri or u.startswith(spec.uri.rstrip("/") + "/") for u in consumed)]


@flow(name="refresh", task_runner=make_task_runner(PipelineConfig().execution), persist_result=False)
def refresh(config: PipelineConfig) -> dict[str, Any] | None:
    """Curate only the input partitions that no earlier release consumed (nothing new: no release)."""
    refuse_parameter_secrets(config)
    logger = get_run_logger()
    storage = storage_spec(config).open()
    fresh = new_partitions(config, storage)
    if not fresh:
        logger.info("no new input partitions under %s: nothing to release", [i.uri for i in config.inputs])
        return None
    logger.info("new partitions: %s", [i.uri for i in fresh])
    return run_release(config.model_copy(update={"inputs": fresh, "release": config.release}))
