"""The ProX stage over an Arrow table: document-level programs, then chunk-level programs
on the kept documents, run by the interpreter; attributes and figures for the manifest."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from tasks import registry
from tasks.prox.chunks import doc_input, make_chunks
from tasks.prox.config import ProxConfig
from tasks.prox.heuristic import HeuristicParams
from tasks.prox.interpreter import run_chunk_programs, run_doc_program
from tasks.prox.learned import LearnedWriter, load_model
from tasks.prox.program import parse_program
from tasks.prox.writers import HeuristicWriter, ModelWriter, Writer
from tasks.schema import whole_document_spans

if TYPE_CHECKING:  # the type only: the whole pipeline's config sits above the stage
    from tasks.config import PipelineConfig

CHUNK_SEPARATOR = "\n---\n"


# the ProX line model for extracted text (tasks.prox.after_extract trains it); the file stays
# with the extract stage whose output it was trained on (package data there)
AFTER_EXTRACT_MODEL = Path(__file__).parents[1] / "extract" / "models" / "prox_after_extract" / "model.json.gz"
LOCAL_WRITERS = ("heuristic", "learned")  # writers that need no language model


def writer_kind(config: PipelineConfig) -> str:
    if config.prox.writer != "auto":
        return config.prox.writer
    return "model" if (config.llm.model or config.llm.base_url) else "learned"


def learned_model_url(config: PipelineConfig) -> str | None:
    """The learned writer's line model: the configured one; else, when the extract stage runs
    before ProX, the model trained on extracted text (the shipped default, trained on whole
    page text, deletes real content that the extractor has already cleaned: Readability pages'
    content-line F1 0.598 against 0.836, bench/results/extract.json); else the shipped default."""
    if config.prox.model:
        return config.prox.model
    names = [st.name for st in registry.order(config)]
    if "extract" in names and "prox" in names and names.index("extract") < names.index("prox"):
        return str(AFTER_EXTRACT_MODEL)
    return None


def check_writer(config: PipelineConfig) -> None:
    """Fail before any work when the writer's model file is missing or unusable (the error
    names the file)."""
    if config.prox.enabled and writer_kind(config) == "learned":
        load_model(learned_model_url(config), config.storage.endpoint_url)


def make_writer(config: PipelineConfig, texts: list[str], client: Any = None) -> Writer:
    kind = writer_kind(config)
    if kind == "heuristic":
        return HeuristicWriter(HeuristicParams(**config.prox.heuristic), texts)
    if kind == "learned":
        return LearnedWriter(load_model(learned_model_url(config), config.storage.endpoint_url), texts)
    if client is None:
        raise ValueError(f"the {kind} writer needs a language-model client")
    return ModelWriter(client, kind == "teacher", config.prox.max_doc_program_tokens,
                       config.prox.max_chunk_program_tokens)


@dataclass
class ProxResult:
    keep: np.ndarray
    text: list[str]
    reason: list[str | None]
    attributes: dict[str, pa.Array]
    figures: dict[str, Any] = field(default_factory=dict)


def refine(texts: list[str], cfg: ProxConfig, writer: Writer, count) -> ProxResult:
    """``count`` gives token counts (the model's tokenizer, or the documented approximation)."""
    n = len(texts)
    keep = np.ones(n, dtype=bool)
    out_text = list(texts)
    reason: list[str | None] = [None] * n
    doc_prog: list[str | None] = [None] * n
    chunk_prog: list[str | None] = [None] * n
    errors = np.zeros(n, dtype=np.int64)
    ops: list[dict[str, int]] = [{} for _ in range(n)]
    outcome: list[str] = ["unchanged"] * n
    fig: Counter[str] = Counter()
    op_totals: Counter[str] = Counter()

    if cfg.doc_level and n:
        # a writer without a context limit (the learned one) decides on the whole document,
        # and so reads each document once for both passes
        whole = getattr(writer, "whole_documents", False)
        programs = writer.doc_programs(texts if whole else [doc_input(t, count, cfg.doc_tokens) for t in texts])
        for i, text in enumerate(programs):
            parsed = parse_program(text)
            decision = run_doc_program(parsed)
            doc_prog[i] = text
            errors[i] += decision.errors
            fig["doc_programs"] += 1
            fig["doc_program_failures"] += decision.errors > 0 or not decision.decided
            op_totals.update(parsed.ops())
            if not decision.keep:
                keep[i], reason[i], outcome[i] = False, "drop_doc", "dropped_by_program"

    todo = [i for i in range(n) if keep[i] and texts[i].strip()]  # an empty document never reaches it
    if cfg.chunk_level and todo:
        chunks = [make_chunks(texts[i], count, cfg.chunk_tokens) for i in todo]
        programs = writer.chunk_programs([texts[i] for i in todo], chunks)
        for i, ch, progs in zip(todo, chunks, programs, strict=True):
            parsed = [parse_program(p) for p in progs]
            res = run_chunk_programs(texts[i], ch, parsed, compat=cfg.compat)
            chunk_prog[i] = CHUNK_SEPARATOR.join(progs)
            errors[i] += res.errors
            ops[i] = res.ops
            op_totals.update(res.ops)
            fig["chunk_programs"] += len(progs)
            fig["chunk_program_failures"] += sum(1 for p in parsed if p.errors) + res.ignored_chunks
            fig["chunk_calls"] += sum(len(p.calls) for p in parsed)
            outcome[i] = res.outcome
            if res.text is None:
                keep[i], reason[i] = False, res.outcome.removeprefix("dropped_")
            else:
                out_text[i] = res.text

    words_in = np.array([len(t.split()) for t in texts], dtype=np.int64)
    words_out = np.array([len(t.split()) if k else 0 for t, k in zip(out_text, keep, strict=True)], dtype=np.int64)
    retention = np.divide(words_out, words_in, out=np.zeros(n), where=words_in > 0)
    lengths = pa.array([len(t) for t in texts], pa.int64())
    attrs = {
        "prox__program__doc": pa.array(doc_prog, pa.string()),
        "prox__program__chunks": pa.array(chunk_prog, pa.string()),
        "prox__program__errors": pa.array(errors, pa.int64()),
        "prox__program__ops": pa.array([json.dumps(o, sort_keys=True) if o else None for o in ops], pa.string()),
        "prox__program__outcome": pa.array(outcome, pa.string()),
        "prox__program__retention": whole_document_spans(lengths, pa.array(retention, pa.float64())),
    }
    figures = {**fig, "ops": dict(op_totals), "outcomes": dict(Counter(outcome)),
               "words_in": int(words_in.sum()), "words_out": int(words_out.sum()),
               "usage": writer.usage()}
    return ProxResult(keep, out_text, reason, attrs, figures)
