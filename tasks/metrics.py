"""Prometheus metrics of a corpus root, derived from its committed manifests.

Runs are short-lived batch jobs, so instead of pushing from every run the exporter reads the
durable record (catalog and manifests) and serves it: `refinery metrics serve ROOT` is the
scrape target; Grafana dashboards in `dashboards/grafana/` query these names only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from tasks.manifest import ManifestError
from tasks.publish import read_catalog, read_manifest_file
from tasks.storage import Storage

PREFIX = "refinery"


def families() -> dict[str, Any]:
    g, c = GaugeMetricFamily, CounterMetricFamily
    return {
        "releases": g(f"{PREFIX}_releases", "Committed releases in the catalog"),
        "release_documents": g(f"{PREFIX}_release_documents", "Documents published by a release", labels=["release"]),
        "release_tokens": g(f"{PREFIX}_release_tokens", "Tokens (words) published by a release", labels=["release"]),
        "release_model_tokens": g(f"{PREFIX}_release_model_tokens",
                                  "Tokens of the configured tokenizer published by a release", labels=["release"]),
        "release_bytes": g(f"{PREFIX}_release_bytes", "Bytes of document files of a release", labels=["release"]),
        "release_published": g(f"{PREFIX}_release_published_timestamp_seconds", "When a release was published",
                               labels=["release"]),
        "stage_docs_in": c(f"{PREFIX}_stage_documents_in", "Documents into a stage", labels=["release", "stage"]),
        "stage_docs_out": c(f"{PREFIX}_stage_documents_out", "Documents out of a stage", labels=["release", "stage"]),
        "stage_dropped": c(f"{PREFIX}_stage_documents_dropped", "Documents a stage dropped, by reason",
                           labels=["release", "stage", "reason"]),
        "stage_tokens_out": c(f"{PREFIX}_stage_tokens_out", "Tokens out of a stage", labels=["release", "stage"]),
        "stage_seconds": g(f"{PREFIX}_stage_seconds", "Wall time of a stage", labels=["release", "stage"]),
        "stage_throughput": g(f"{PREFIX}_stage_documents_per_second", "Documents into a stage per second of wall time",
                              labels=["release", "stage"]),
        "source_documents": g(f"{PREFIX}_source_documents", "Documents published per source",
                              labels=["release", "source"]),
        "duplicate_rate": g(f"{PREFIX}_duplicate_rate", "Share of documents removed as duplicates",
                            labels=["release", "kind"]),
        "errors": c(f"{PREFIX}_errors", "Input shards that failed", labels=["release", "stage"]),
        "model_requests": c(f"{PREFIX}_model_requests", "Language-model requests sent", labels=["release", "stage"]),
        "model_tokens": c(f"{PREFIX}_model_tokens", "Language-model tokens (prompt + completion)",
                          labels=["release", "stage"]),
        "model_cache_hits": c(f"{PREFIX}_model_cache_hits", "Prompts answered from the response cache",
                              labels=["release", "stage"]),
        "model_failures": c(f"{PREFIX}_model_failures", "Language-model requests that failed or were over budget",
                            labels=["release", "stage"]),
        "ray_cpus": g(f"{PREFIX}_ray_cpus", "CPUs of the Ray cluster a release ran on", labels=["release"]),
    }


def manifest_samples(fam: dict[str, Any], m: dict[str, Any]) -> None:
    """Add one manifest's samples to the metric families."""
    from datetime import datetime

    r = m["release"]
    fam["release_documents"].add_metric([r], m["totals"]["documents"])
    fam["release_tokens"].add_metric([r], m["totals"]["tokens"])
    if "model_tokens" in m["totals"]:
        fam["release_model_tokens"].add_metric([r], m["totals"]["model_tokens"])
    fam["release_bytes"].add_metric([r], m["totals"]["bytes"])
    fam["release_published"].add_metric([r], datetime.fromisoformat(m["published"]).timestamp())
    for st in m["funnel"]:
        s = st["stage"]
        fam["stage_docs_in"].add_metric([r, s], st["docs_in"])
        fam["stage_docs_out"].add_metric([r, s], st["docs_out"])
        fam["stage_tokens_out"].add_metric([r, s], st["tokens_out"])
        for reason, n in st["dropped"].items():
            fam["stage_dropped"].add_metric([r, s, reason], n)
        secs = m["timing"].get(s)
        if secs is not None:
            fam["stage_seconds"].add_metric([r, s], secs)
            fam["stage_throughput"].add_metric([r, s], st["docs_in"] / secs if secs else 0.0)
        llm = m.get("llm", {}).get("stages", {}).get(s, {})
        fam["model_requests"].add_metric([r, s], llm.get("requests", 0))
        fam["model_tokens"].add_metric([r, s], llm.get("prompt_tokens", 0) + llm.get("completion_tokens", 0))
        fam["model_cache_hits"].add_metric([r, s], llm.get("cache_hits", 0))
        fam["model_failures"].add_metric([r, s], llm.get("failures", 0))
    for source, v in m["sources"].items():
        fam["source_documents"].add_metric([r, source], v["documents"])
    for kind, d in m.get("dedup", {}).items():
        fam["duplicate_rate"].add_metric([r, kind], d["duplicate_rate"])
    by_stage: dict[str, int] = {}
    for f in m["failures"]:
        by_stage[f["stage"]] = by_stage.get(f["stage"], 0) + 1
    for s in {st["stage"] for st in m["funnel"]} | set(by_stage):
        fam["errors"].add_metric([r, s], by_stage.get(s, 0))
    fam["ray_cpus"].add_metric([r], m["cluster"]["ray_cpus"])


class ReleaseCollector(Collector):
    """Collects from the catalog and manifests at every scrape (the newest ``keep`` releases)."""

    def __init__(self, storage: Storage, keep: int = 50):
        self.storage, self.keep = storage, keep

    def collect(self) -> Iterator[Any]:
        fam = families()
        releases = read_catalog(self.storage)["releases"]
        fam["releases"].add_metric([], len(releases))
        for entry in releases[-self.keep:]:
            try:
                manifest_samples(fam, read_manifest_file(self.storage, entry["manifest"]))
            except (FileNotFoundError, ManifestError):
                continue  # damaged since the catalog was written: the next rebuild names it
        yield from fam.values()


def metric_names() -> set[str]:
    """Every sample name the exporter can emit (counters add ``_total`` and ``_created``)."""
    names = set()
    for f in families().values():
        names.add(f.name + "_total" if f.type == "counter" else f.name)
    return names


def registry_for(storage: Storage) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(ReleaseCollector(storage))
    return reg
