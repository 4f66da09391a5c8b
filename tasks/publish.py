"""Stage 7, publish: manifest, urls.txt, report and catalog for a release whose shard
outputs are all written. The manifest is written last; the catalog is rebuilt after it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from tasks import layout, registry
from tasks.catalog import (
    read_catalog,
    read_manifest_file,
    rebuild_catalog,
)
from tasks.manifest import (
    SCHEMA_VERSION,
    ManifestError,
    add_funnel,
    code_version,
    config_sha256,
    validate_manifest,
)
from tasks.report import render_report
from tasks.stepkit import LENGTH_BINS, RunContext
from tasks.storage import Storage

MODEL_STAGES = ["prox", "leaner"]  # stages whose markers carry `<stage>.usage` from tasks.llm


def _files(markers: Iterable[dict[str, Any]], key: str = "files") -> list[dict[str, Any]]:
    out = []
    for m in markers:
        out.extend(m.get(key, []))
    return sorted(out, key=lambda f: f["path"])


def _kind(path: str) -> str | None:
    parts = path.split("/")
    return parts[2] if len(parts) > 3 and parts[0] == "releases" else None


def _inputs(ingest_markers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_uri: dict[str, dict[str, Any]] = {}
    for m in ingest_markers:
        info = m["input"]
        entry = by_uri.setdefault(info["uri"], {"uri": info["uri"], "bytes": info["bytes"], "rows": 0})
        entry["rows"] += info["rows"]
        for key in ("sha256", "etag"):
            if key in info:
                entry[key] = info[key]
    return list(by_uri.values())  # in shard order, the order that decides dedup survivors


def build_manifest(
    ctx: RunContext,
    markers: dict[str, list[dict[str, Any]]],
    failures: list[dict[str, Any]],
    timing: dict[str, float],
    cluster: dict[str, Any],
    flow_run_id: str | None,
    storage: Storage,
    stages: list[str] | None = None,
    steps: list[str] | None = None,
) -> dict[str, Any]:
    """``stages``: the release's stages in the order they ran; ``steps``: the labels of their
    map steps in that order (one funnel line each); both default to the config's order."""
    stages = stages if stages is not None else [st.name for st in registry.order(ctx.config)]
    steps = steps if steps is not None else registry.expected_steps(ctx.config)
    documents = _files([m for st in steps for m in markers.get(st, [])], "documents")
    stage_files = [f for st in steps for f in _files(markers.get(st, []))]
    # by the folder under the release (releases/<r>/<kind>/...), never by a substring: a source
    # may be called "rejects"
    attributes = [f for f in stage_files if _kind(f["path"]) == "attributes"]
    rejects = [f for f in stage_files if _kind(f["path"]) == "rejects"]
    changes = [f for f in stage_files if _kind(f["path"]) == "changes"]
    samples = [x for st in steps for m in markers.get(st, []) for x in m.get("samples", [])]

    funnel = []
    for stage in steps:
        if stage not in markers:
            continue
        total: dict[str, Any] = {}
        for m in markers[stage]:
            total = add_funnel(total, m["funnel"])
        funnel.append({"stage": stage, **(total or add_funnel({}, {}))})

    sources: dict[str, dict[str, Any]] = {}
    for f in documents:
        s = sources.setdefault(f["source"], {"documents": 0, "tokens": 0, "bytes": 0,
                                             "length_histogram": [0] * len(LENGTH_BINS)})
        s["documents"] += f["rows"]
        s["tokens"] += f["tokens"]
        s["bytes"] += f["bytes"]
        s["length_histogram"] = [a + b for a, b in zip(s["length_histogram"], f["length_histogram"], strict=True)]

    dedup: dict[str, Any] = {}
    if "exact_dedup_reduce" in markers:
        dups = sum(m["duplicates"] for m in markers["exact_dedup_reduce"])
        groups = sum(m["groups"] for m in markers["exact_dedup_reduce"])
        docs_in = next((st["docs_in"] for st in funnel if st["stage"] == "exact_dedup"), 0)
        dedup["exact"] = {
            "key": ctx.config.exact_dedup.key,
            "buckets": ctx.exact_buckets,
            "duplicates": dups,
            "groups": groups,
            "duplicate_rate": round(dups / docs_in, 6) if docs_in else 0.0,
        }

    if "near_dedup" in markers:
        dedup["near"] = near_figures(ctx, markers, funnel, storage)
    if "ingest_ids" in markers:  # source ids were checked across shards (tasks.steps.id_reduce_step)
        rows = sum(m["rows"] for m in markers["ingest_ids"])
        dups = sum(m["duplicates"] for m in markers["ingest_ids"])
        dedup["source_ids"] = {"buckets": len(markers["ingest_ids"]), "rows": rows, "duplicates": dups,
                               "duplicate_rate": round(dups / rows, 6) if rows else 0.0}

    public = ctx.config.public_dict()
    quality = quality_figures(ctx, markers, funnel) if "quality" in markers else None
    prox = prox_figures(ctx, markers["prox"]) if "prox" in markers else None
    leaner = leaner_figures(markers["leaner"]) if "leaner" in markers else None
    model_stages = [st for st in MODEL_STAGES if st in markers]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "release": ctx.release,
        "parent": ctx.parent,
        "stages": stages,
        "created": ctx.created,
        "published": datetime.now(UTC).isoformat(),
        "flow_run_id": flow_run_id,
        "code": code_version(),
        "config": public,
        "config_sha256": config_sha256(public),
        "storage": {"root": storage.url(), "endpoint_url": ctx.storage.endpoint_url},
        "inputs": _inputs(markers.get("ingest", [])),
        "outputs": {"documents": documents, "attributes": attributes, "rejects": rejects, "changes": changes},
        # a few documents each modifying stage changed, for the report (texts cut at 1,500 characters)
        "samples": _first_per_stage(samples, 3, steps),
        "sources": dict(sorted(sources.items())),
        "funnel": funnel,
        "dedup": dedup,
        **({"quality": quality} if quality is not None else {}),
        **({"prox": prox} if prox is not None else {}),
        **({"leaner": leaner} if leaner is not None else {}),
        # the sections of stages that declare their own (tasks.registry.Stage.figures)
        **{name: st.figures(ctx, markers[name]) for name in stages
           if (st := registry.get(name)).figures is not None and name in markers},
        **({"llm": llm_usage(ctx, markers)} if any(_sum_dicts(m[st]["usage"] for m in markers[st])
                                                   for st in model_stages) else {}),
        "failures": failures,
        # task runs of the steps that ran as groups of shards (tasks/ingest_stage.py), by step label
        **({"task_groups": {m["label"]: m["task_runs"] for m in markers["task_groups"]}}
           if markers.get("task_groups") else {}),
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "cluster": cluster,
        "totals": {
            "documents": sum(f["rows"] for f in documents),
            "tokens": sum(f["tokens"] for f in documents),
            "bytes": sum(f["bytes"] for f in documents),
            "rejected": sum(f["rows"] for f in rejects),
            # tokens as the model will see them (tasks/tokens.py), when every document file has them
            **({"model_tokens": sum(f["model_tokens"] for f in documents)}
               if documents and all("model_tokens" in f for f in documents) else {}),
        },
        "tokenizer": next((m["tokenizer"] for st in steps for m in markers.get(st, []) if "tokenizer" in m),
                          "no documents"),
        "urls": "urls.txt",
        "length_bins": LENGTH_BINS,
    }
    manifest["drift"] = drift(storage, manifest)
    return manifest


def quality_figures(ctx: RunContext, markers: dict[str, list[dict[str, Any]]],
                    funnel: list[dict[str, Any]]) -> dict[str, Any]:
    """Taggers, per-rule drop counts, score histograms and the thresholds used."""
    from tasks.quality import stage

    cfg = ctx.config.quality
    histograms: dict[str, list[int]] = {}
    languages: dict[str, int] = {}
    mismatches: dict[str, int] = {}
    for m in markers["quality"]:
        for name, n in m.get("type_mismatches", {}).items():
            mismatches[name] = mismatches.get(name, 0) + n
        for name, counts in m["histograms"].items():
            histograms[name] = [a + b for a, b in zip(histograms.get(name, [0] * len(counts)), counts, strict=True)]
        for lang, n in m["languages"].items():
            languages[lang] = languages.get(lang, 0) + n
    drops: dict[str, int] = {}
    for st in funnel:
        if st["stage"] in ("quality", "quality_threshold"):
            drops.update(st["dropped"])
    rules = [r.name for r, _ in stage.stage_rules(cfg)] + [t.name for t in cfg.thresholds]
    bins = [round(i / stage.HISTOGRAM_BINS, 6) for i in range(stage.HISTOGRAM_BINS + 1)]
    return {
        "taggers": stage.enabled_taggers(cfg),
        "attributes": stage.attribute_names(cfg),
        "rules": {name: drops.get(name, 0) for name in rules},
        "histograms": {name: {"bins": bins, "counts": counts} for name, counts in sorted(histograms.items())},
        "thresholds": (markers.get("quality_threshold_values") or [{"thresholds": []}])[0]["thresholds"],
        "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        "classifier": cfg.classifier.model,
        # the combined score's model: None when it is off, "shipped" for the packaged one
        "combined": (cfg.combined.model or "shipped") if cfg.combined.enabled else None,
        # per rule: documents whose metadata value had another type than the rule compares
        # (no match, as for a missing value; docs/quality.md)
        "type_mismatches": dict(sorted(mismatches.items())),
        # the fast engine's documents and its per-document fallbacks to datatrove's classes
        "engine": stage.engine_figures(markers["quality"]),
        # the release's scores checked against labelled documents (quality.evaluate)
        **({"evaluation": markers["quality_evaluation"][0]["evaluation"]} if markers.get("quality_evaluation") else {}),
    }


def _first_per_stage(samples: list[dict[str, Any]], k: int, steps: list[str]) -> list[dict[str, Any]]:
    out, seen = [], {}
    for x in sorted(samples, key=lambda x: (steps.index(x["stage"]), x["id"])):
        if seen.get(x["stage"], 0) < k:
            seen[x["stage"]] = seen.get(x["stage"], 0) + 1
            out.append(x)
    return out


def _sum_dicts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, dict):
                out[k] = _sum_dicts([out.get(k, {}), v])
            else:
                out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def prox_figures(ctx: RunContext, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """Programs run, failure rates, calls per chunk program, op counts, token retention."""
    f = _sum_dicts(m["prox"] for m in markers)
    usage = {"requests": 0, "cache_hits": 0, "failures": 0, "prompt_tokens": 0, "completion_tokens": 0,
             "errors": {}}
    usage.update(f.get("usage", {}))
    doc, chunk = f.get("doc_programs", 0), f.get("chunk_programs", 0)
    return {
        "writer": markers[0]["writer"] if markers else None,
        **({"writer_model": markers[0]["writer_model"]} if markers and "writer_model" in markers[0] else {}),
        "compat": ctx.config.prox.compat,
        "programs_run": doc + chunk,
        "doc_programs": doc,
        "chunk_programs": chunk,
        "doc_failure_rate": round(f.get("doc_program_failures", 0) / doc, 6) if doc else 0.0,
        "chunk_failure_rate": round(f.get("chunk_program_failures", 0) / chunk, 6) if chunk else 0.0,
        "calls_per_chunk_program": round(f.get("chunk_calls", 0) / chunk, 4) if chunk else 0.0,
        "model_calls_per_program": round((usage["requests"] + usage["cache_hits"]) / (doc + chunk), 4)
        if doc + chunk else 0.0,
        "ops": f.get("ops", {}),
        "outcomes": f.get("outcomes", {}),
        "words_in": f.get("words_in", 0),
        "words_out": f.get("words_out", 0),
        "token_retention": round(f.get("words_out", 0) / f["words_in"], 6) if f.get("words_in") else 0.0,
        "usage": usage,
    }


def leaner_figures(markers: list[dict[str, Any]]) -> dict[str, Any]:
    """Accepted, rejected by reason, lean-vocabulary coverage before and after, windows, tokens."""
    f = _sum_dicts(m["leaner"] for m in markers)
    docs, accepted = f.get("documents", 0), f.get("accepted", 0)
    usage = f.get("usage", {})
    return {
        "documents": docs,
        "accepted": accepted,
        "rejected": f.get("rejected", {}),
        "acceptance_rate": round(accepted / docs, 6) if docs else 0.0,
        "windows": f.get("windows", 0),
        "window_failures": f.get("window_failures", {}),
        "genres": f.get("genres", {}),
        "coverage": {
            "before": round(f.get("coverage_before_sum", 0) / docs, 6) if docs else None,
            "after": round(f.get("coverage_after_sum", 0) / docs, 6) if docs else None,
            "accepted_before": round(f.get("accepted_coverage_before_sum", 0) / accepted, 6) if accepted else None,
            "accepted_after": round(f.get("accepted_coverage_after_sum", 0) / accepted, 6) if accepted else None,
        },
        "tokens": {"in": usage.get("prompt_tokens", 0), "out": usage.get("completion_tokens", 0)},
        "usage": usage,
    }


def llm_usage(ctx: RunContext, markers: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The model and every model-backed stage's requests, tokens, cache hits and failures."""
    from tasks.llm.client import cache_identity

    stages = {st: _sum_dicts(m[st]["usage"] for m in markers[st]) for st in MODEL_STAGES if st in markers}
    total = _sum_dicts(stages.values())
    return {"backend": ctx.config.llm.backend, "model": cache_identity(ctx.config.llm), "stages": stages,
            "total": total, "budget": {"max_requests": ctx.config.llm.max_requests,
                                       "max_total_tokens": ctx.config.llm.max_total_tokens}}


def drift(storage: Storage, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """This release against its parent: size, pass rate per stage, duplicate rates. A parent
    whose manifest is gone or damaged makes drift "unavailable" (with the reason), never a
    failed release."""
    parent_id = manifest.get("parent")
    if not parent_id:
        return None
    try:
        parent = read_manifest_file(storage, layout.manifest_path(parent_id))
    except FileNotFoundError:
        return {"parent": parent_id, "unavailable": f"{storage.url(layout.manifest_path(parent_id))}: no manifest"}
    except ManifestError as exc:
        return {"parent": parent_id, "unavailable": str(exc)}

    def rates(m):
        return {st["stage"]: round(st["docs_out"] / st["docs_in"], 6) if st["docs_in"] else None for st in m["funnel"]}

    def dup(m, kind):
        return m.get("dedup", {}).get(kind, {}).get("duplicate_rate")

    return {
        "parent": parent_id,
        "documents": {"parent": parent["totals"]["documents"], "this": manifest["totals"]["documents"]},
        "tokens": {"parent": parent["totals"]["tokens"], "this": manifest["totals"]["tokens"]},
        "pass_rate": {"parent": rates(parent), "this": rates(manifest)},
        "duplicate_rate": {k: {"parent": dup(parent, k), "this": dup(manifest, k)} for k in ("exact", "near")},
    }


def near_figures(ctx: RunContext, markers: dict[str, list[dict[str, Any]]], funnel: list[dict[str, Any]],
                 storage: Storage) -> dict[str, Any]:
    from tasks.dedup import index as near_index
    from tasks.dedup.minhash import candidate_probability, signature_scheme

    cfg = ctx.config.near_dedup
    info = markers["near_dedup_info"][0]
    surv = markers["near_dedup_survivors"]
    dropped = sum(m["dropped"] for m in surv)
    docs_in = next((st["docs_in"] for st in funnel if st["stage"] == "near_dedup"), 0)
    sizes: dict[str, int] = {}
    for m in surv:
        for k, c in m["cluster_sizes"].items():
            sizes[k] = sizes.get(k, 0) + c
    committed = [r["id"] for r in read_catalog(storage)["releases"] if r["id"] != ctx.release] + [ctx.release]
    scheme = signature_scheme(cfg.params())
    after = near_index.index_size(storage, near_index.live_view(storage, committed, scheme)) if cfg.cross_release else None
    return {
        "parameters": {k: getattr(cfg, k) for k in ("num_perm", "bands", "rows", "seed", "ngram", "shingle",
                                                     "hash_function", "verify_threshold", "survivor",
                                                     "survivor_attribute", "cross_release")},
        "partitions": ctx.near_partitions,
        "s_curve": {f"{j:.1f}": round(candidate_probability(j, cfg.bands, cfg.rows), 4) for j in (0.5, 0.7, 0.8, 0.9)},
        "candidate_pairs": sum(m["candidates"] for m in markers["near_dedup_reduce"]),
        "edges": sum(m["edges"] for m in markers["near_dedup_reduce"]),
        "index_rows_read": sum(m["index_rows"] for m in markers["near_dedup_reduce"]),
        "clusters": sum(m["clusters"] for m in surv),
        "cluster_sizes": dict(sorted(sizes.items(), key=lambda kv: int(kv[0]))),
        "duplicates": dropped,
        "matched_earlier_releases": sum(m["matched_earlier"] for m in surv),
        "duplicate_rate": round(dropped / docs_in, 6) if docs_in else 0.0,
        "cc_rounds": info["cc_rounds"],
        "components": info["cc"],
        "no_shingle_docs": sum(m["near_map"]["no_shingles"] for st in ("ingest", "exact_dedup")
                               for m in markers.get(st, []) if "near_map" in m),
        "index": {"earlier_releases": info["index_releases"], "before": info["index_before"], "after": after,
                  "scheme": scheme, "skipped": [{"release": r, "scheme": s} for r, s in sorted(info["skipped"].items())]},
    }


def publish_release(storage: Storage, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write urls.txt and the report, then the manifest (the commit point), then the catalog."""
    release = manifest["release"]
    validate_manifest(manifest)
    urls = "".join(storage.url(f["path"]) + "\n" for f in manifest["outputs"]["documents"])
    storage.write_bytes(layout.urls_path(release), urls.encode())
    storage.write_bytes(layout.report_path(release), render_report(manifest).encode())
    storage.write_json(layout.manifest_path(release), manifest)
    rebuild_catalog(storage)
    return manifest
