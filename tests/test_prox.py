"""ProX: the program parser and interpreter (upstream-compatible and our own semantics), the
heuristic writer against Readability's main text, and the model writer with Gemma 270M."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.config import LLMConfig, ProxConfig
from tasks.llm.backends import approx_tokens
from tasks.prox import heuristic, stage
from tasks.prox.chunks import make_chunks
from tasks.prox.interpreter import run_chunk_programs, run_doc_program
from tasks.prox.program import Call, ProgramError, parse_call, parse_program, render
from tasks.prox.writers import CHUNK_GRAMMAR, HeuristicWriter, ModelWriter
from tests.conftest import shared

KNOWN = {"drop_doc", "keep_doc", "remove_lines", "normalize", "noop"}


@given(st.text(max_size=400))
@settings(max_examples=1500, deadline=None)
def test_parser_returns_a_program_for_any_text(text):
    program = parse_program(text)
    assert all(c.name in KNOWN for c in program.calls)
    assert len(program.calls) + len(program.errors) <= max(1, len([ln for ln in text.splitlines() if ln.strip()]))
    for line in text.splitlines():
        with contextlib.suppress(ProgramError):  # anything else escaping fails the test
            parse_call(line)


@given(st.lists(st.sampled_from(["remove_lines(", "normalize(", "keep_doc(", "drop_doc(", "line_start=", "start=",
                                 "source_str=", "'", '"', ",", ")", "=", "0", "12", "-3", "x", "\\", "\n", "(", " ",
                                 "__import__('os')", "open(", "lambda:", "[1]", "{}", "1e9", "True"]),
                max_size=30).map("".join))
@settings(max_examples=1500, deadline=None)
def test_parser_on_program_like_noise(text):
    program = parse_program(text)
    for c in program.calls:
        if c.name == "remove_lines":
            assert all(isinstance(a, int) and a >= 0 for a in c.args) and c.args[0] <= c.args[1]
        if c.name == "normalize":
            assert all(isinstance(a, str) for a in c.args) and c.args[0]


def test_model_output_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    hostile = [f"__import__('os').system('touch {marker}')", f"open('{marker}', 'w')",
               f"normalize(source_str=__import__('os').system('touch {marker}'), target_str='')",
               f"remove_lines(line_start=exec('open(\"{marker}\",\"w\")'), line_end=1)",
               "remove_lines(line_start=(lambda: 1)(), line_end=2)"]
    program = parse_program("\n".join(hostile))
    assert program.calls == [] and len(program.errors) == len(hostile)
    assert not marker.exists()


@given(st.lists(st.one_of(
    st.tuples(st.integers(0, 5000), st.integers(0, 50)).map(lambda t: Call("remove_lines", (t[0], t[0] + t[1]))),
    st.tuples(st.text(min_size=1, max_size=40), st.text(max_size=20)).map(lambda t: Call("normalize", t)),
    st.just(Call("noop")), st.just(Call("keep_doc")), st.just(Call("drop_doc"))), max_size=8))
@settings(max_examples=500, deadline=None)
def test_render_then_parse_round_trips(calls):
    calls = [c for c in calls if c.name != "normalize" or "\n" not in c.args[0] + c.args[1]
             and "\r" not in c.args[0] + c.args[1] and not any(ch in c.args[0] + c.args[1] for ch in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")]
    program = parse_program(render(calls))
    assert program.errors == [] and program.calls == calls


def _doc(n: int) -> str:
    return "\n".join(f"line {i} has a few words of real text in it" for i in range(n))


def test_upstream_literal_examples():
    """The literal programs of PROX_LEANER.md, under upstream semantics (compat)."""
    assert run_doc_program(parse_program("drop_doc()")).keep is False
    assert run_doc_program(parse_program("keep_doc()")).keep is True
    text = _doc(20)
    chunks = make_chunks(text, approx_tokens)

    def run(program: str, doc: str = text):
        chunks = make_chunks(doc, approx_tokens)  # one chunk: the program sees the whole document
        return run_chunk_programs(doc, chunks, [parse_program(program)], compat=True)

    assert len(chunks) == 1
    res = run("remove_lines(line_start=0, line_end=5)")
    assert res.errors == 0 and res.text == "\n".join(text.split("\n")[6:])
    res = run("remove_lines(start=13, end=13)")
    assert res.text.split("\n") == [ln for i, ln in enumerate(text.split("\n")) if i != 13]
    assert run("untouch_doc()").outcome == "unchanged"
    paged = text + "\nPages: 1 3 4 of the archive are here for you to read"
    res = run('normalize(source_str="Pages: 1 3 4", target_str="")', paged)
    assert res.text.endswith("\n of the archive are here for you to read")
    # what upstream's string-slicing parser got wrong, ours reads: positional, single quotes, ')' in strings
    assert run("remove_lines(0, 0)").text == "\n".join(text.split("\n")[1:])
    assert run("normalize('line 3 has', 'x)y, z=')").text.split("\n")[3] == "x)y, z= a few words of real text in it"
    # errors: a range starting past the end; an end past the end is clipped (one error)
    res = run("remove_lines(line_start=25, line_end=30)")
    assert res.errors == 1 and res.text == text
    res = run("remove_lines(line_start=18, line_end=40)")
    assert res.errors == 1 and res.text == "\n".join(text.split("\n")[:18])
    # two errors: the original is kept and the program ignored
    res = run("remove_lines(line_start=0, line_end=3)\nbogus(\nremove_lines(line_start=50, line_end=60)")
    assert res.errors == 2 and res.outcome == "original_kept" and res.text == text
    # nearly everything removed with few errors: dropped; ten words or fewer left: dropped
    assert run("remove_lines(line_start=0, line_end=19)").outcome == "dropped_nearly_empty"
    assert run("remove_lines(line_start=1, line_end=19)").outcome in ("dropped_short", "dropped_nearly_empty")


def test_own_semantics_scope_programs_to_their_chunk():
    text = "\n".join(f"Home line {i} has a few words of real text in it" for i in range(60))
    chunks = make_chunks(text, approx_tokens, limit=200)
    assert len(chunks) >= 3
    first = chunks[0]
    programs = [parse_program('normalize(source_str="Home", target_str="")\n'
                              f"remove_lines(line_start={first.first}, line_end={first.first})")]
    programs += [parse_program(f"remove_lines(line_start={first.first}, line_end={first.first + 1})")]
    programs += [parse_program("keep_chunk()")] * (len(chunks) - 2)
    own = run_chunk_programs(text, chunks, programs, compat=False)
    up = run_chunk_programs(text, chunks, programs, compat=True)
    lines = own.text.split("\n")
    # ours: normalize only inside chunk 0; chunk 1's removal of chunk-0 lines is an error that voids its program
    assert lines[0] == " line 1 has a few words of real text in it"
    assert sum("Home" in ln for ln in lines) == 60 - chunks[0].last - 1
    assert own.errors == 1 and own.ignored_chunks == 1
    # upstream: the replacement hits every chunk and chunk 1 removes chunk 0's lines
    assert "Home" not in up.text and len(up.text.split("\n")) == 58


def _readability():
    t = pq.read_table(shared("web_pages_readability/web_pages_readability.parquet"),
                      columns=["id", "page_text", "main_text"])
    return t.column("page_text").to_pylist(), t.column("main_text").to_pylist()


def test_heuristic_writer_against_readability_main_text():
    """Line-level precision / recall / F1 of the lines the heuristic programs remove, a page
    line counting as boilerplate when it is not a line of Readability's main text."""
    pages, mains = _readability()
    params = heuristic.HeuristicParams()
    writer = HeuristicWriter(params, pages)
    tp = fp = fn = 0
    for page, main in zip(pages, mains, strict=True):
        chunks = make_chunks(page, approx_tokens)
        programs = writer.chunk_programs([page], [chunks])[0]
        removed: set[int] = set()
        for p in programs:
            parsed = parse_program(p)
            assert parsed.errors == []
            for c in parsed.calls:
                if c.name == "remove_lines":
                    removed |= set(range(c.args[0], c.args[1] + 1))
        res = run_chunk_programs(page, chunks, [parse_program(p) for p in programs])
        assert res.errors == 0
        content = {" ".join(ln.split()) for ln in main.split("\n")}
        for i, line in enumerate(page.split("\n")):
            boiler = " ".join(line.split()) not in content
            tp += i in removed and boiler
            fp += i in removed and not boiler
            fn += i not in removed and boiler
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall)
    print(f"heuristic writer, {len(pages)} pages: line precision {precision:.3f}, recall {recall:.3f}, F1 {f1:.3f}")
    assert precision >= 0.88 and recall >= 0.72 and f1 >= 0.80


def test_stage_refines_pages_and_counts_reconcile():
    pages, _ = _readability()
    for compat in (False, True):
        cfg = ProxConfig(enabled=True, compat=compat)
        res = stage.refine(pages, cfg, HeuristicWriter(heuristic.HeuristicParams(), pages), approx_tokens)
        f = res.figures
        assert f["doc_programs"] == len(pages)
        assert sum(f["outcomes"].values()) == len(pages)
        assert f["ops"]["keep_doc"] + f["ops"].get("drop_doc", 0) == len(pages)
        assert int((~res.keep).sum()) == sum(v for k, v in f["outcomes"].items() if k.startswith("dropped"))
        assert 0.5 < f["words_out"] / f["words_in"] < 1
        retention = [s[0]["score"] for s in res.attributes["prox__program__retention"].to_pylist()]
        assert np.allclose([len(t.split()) / len(p.split()) if k else 0 for t, p, k in
                            zip(res.text, pages, res.keep, strict=True)], retention)


GEMMA_DOCS = [
    "Home\nNews\nSport\nThe river flooded the lower town on Sunday, and volunteers moved families to the school.\n"
    "Share on Facebook\nCopyright 2024 The Daily Example. All rights reserved.",
    "Cheap pills buy now best price click here click here click here",
    "Photosynthesis lets plants turn light, water and carbon dioxide into sugar and oxygen.\n"
    "It happens mostly in the leaves.",
]


@pytest.mark.slow
def test_model_writer_with_gemma_writes_valid_programs(tmp_path):
    """The in-process llama.cpp backend with the real Gemma 3 270M: grammar-constrained
    programs parse without errors; a rerun is answered from the cache."""
    from tasks.llm.client import LLMClient
    from tasks.storage import StorageSpec

    storage = StorageSpec(str(tmp_path / "root")).open()
    cfg = LLMConfig(n_ctx=2048)
    client = LLMClient(cfg, storage)
    writer = ModelWriter(client, teacher=False, max_doc_tokens=8, max_chunk_tokens=96)
    count = approx_tokens
    doc_programs = writer.doc_programs(GEMMA_DOCS)
    chunks = [make_chunks(t, count, limit=200) for t in GEMMA_DOCS]
    chunk_programs = writer.chunk_programs(GEMMA_DOCS, chunks)
    print("doc programs:", doc_programs)
    print("chunk programs:", chunk_programs)
    for p in doc_programs:
        assert p in ("keep_doc()", "drop_doc()")
    for progs in chunk_programs:
        for p in progs:
            parsed = parse_program(p)
            assert parsed.errors == [] and parsed.calls, p
    first = client.usage.to_dict()
    assert first["requests"] == len(GEMMA_DOCS) + sum(len(c) for c in chunks) and first["cache_hits"] == 0
    assert first["completion_tokens"] > 0 and first["failures"] == 0
    again = LLMClient(cfg, storage)
    writer2 = ModelWriter(again, teacher=False, max_doc_tokens=8, max_chunk_tokens=96)
    assert writer2.doc_programs(GEMMA_DOCS) == doc_programs
    assert writer2.chunk_programs(GEMMA_DOCS, chunks) == chunk_programs
    assert again.usage.requests == 0 and again.usage.cache_hits == first["requests"]


@pytest.mark.slow
def test_gemma_sampling_under_the_chunk_grammar_yields_only_parseable_programs():
    """The grammar handed to the bundled Gemma 3 270M itself: sampled at temperature 1 with
    different seeds over real page chunks, every completion is a program the parser accepts
    (no errors, one to six calls), and the samples cover the grammar's call kinds."""
    from llama_cpp import Llama, LlamaGrammar

    from tasks.llm.backends import default_gguf

    llm = Llama(model_path=default_gguf(), n_ctx=1024, seed=0, verbose=False)
    grammar = LlamaGrammar.from_string(CHUNK_GRAMMAR, verbose=False)
    pages = pq.read_table(shared("web_pages_readability/web_pages_readability.parquet")).column("page_text").to_pylist()
    kinds: set[str] = set()
    programs = []
    for k, page in enumerate(pages[:6]):
        chunk = "\n".join(f"[{i}] {line}" for i, line in enumerate(page.splitlines()[:12]))
        for seed in (k, 100 + k):
            res = llm.create_completion(f"{chunk}\n\nProgram:\n", max_tokens=64, temperature=1.0, top_p=1.0,
                                        seed=seed, grammar=grammar)
            text = res["choices"][0]["text"]
            programs.append(text)
            if res["choices"][0]["finish_reason"] == "length":
                # cut by max_tokens: a prefix of a sentence of the grammar, whose finished
                # lines are whole calls
                text = text.rsplit("\n", 1)[0] if "\n" in text else ""
                if not text:
                    continue
            parsed = parse_program(text)
            assert parsed.errors == [] and 1 <= len(parsed.calls) <= 6, text  # the grammar: one to six calls
            kinds |= {c.name for c in parsed.calls}
    print("sampled programs:", programs[:6])
    assert len(kinds) >= 2, kinds  # the samples did explore the grammar's alternatives


def _server(tmp_path: Path, model: str):
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc, port, log
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not come up: {(tmp_path / 'server.log').read_text()[-2000:]}")


@pytest.mark.slow
def test_openai_backend_against_a_real_server_and_cache_rerun(tmp_path):
    """llama-cpp-python's own OpenAI-compatible server with the same GGUF: programs come back
    valid (the grammar travels as llama.cpp's `grammar`), and a rerun sends no request."""
    from tasks.llm.backends import default_gguf
    from tasks.llm.client import LLMClient
    from tasks.storage import StorageSpec

    proc, port, log = _server(tmp_path, default_gguf())
    try:
        storage = StorageSpec(str(tmp_path / "root")).open()
        cfg = LLMConfig(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", concurrency=2, structured="gbnf")

        def served() -> int:
            return len(re.findall(r"POST /v1/completions", (tmp_path / "server.log").read_text()))

        client = LLMClient(cfg, storage)
        programs = ModelWriter(client, False, 8, 48).doc_programs(GEMMA_DOCS)
        assert all(p in ("keep_doc()", "drop_doc()") for p in programs), programs
        assert client.usage.requests == len(GEMMA_DOCS) == served()
        rerun = LLMClient(cfg, storage)
        assert ModelWriter(rerun, False, 8, 48).doc_programs(GEMMA_DOCS) == programs
        assert rerun.usage.requests == 0 and rerun.usage.cache_hits == len(GEMMA_DOCS)
        assert served() == len(GEMMA_DOCS)  # the server saw no new request
        # the teacher writer: instructions in a chat (the server applies the GGUF's chat template)
        chat = LLMClient(cfg.model_copy(update={"chat": True}), storage)
        teacher = ModelWriter(chat, True, 8, 48)
        assert all(p in ("keep_doc()", "drop_doc()") for p in teacher.doc_programs(GEMMA_DOCS[:2]))
        chunks = make_chunks(GEMMA_DOCS[0], approx_tokens, limit=200)
        (programs_0,) = teacher.chunk_programs(GEMMA_DOCS[:1], [chunks])
        assert all(parse_program(p).errors == [] for p in programs_0), programs_0
        assert chat.usage.requests == 3
        assert len(re.findall(r"POST /v1/chat/completions", (tmp_path / "server.log").read_text())) == 3
        # a request budget: the second prompt is refused, not sent
        budget = LLMClient(cfg.model_copy(update={"max_requests": 1, "cache": False}), storage)
        out = ModelWriter(budget, False, 8, 48).doc_programs(["A short new document about rivers.", "Another one."])
        assert budget.usage.requests == 1 and budget.usage.errors == {"budget": 1} and out[1] == ""
        assert served() == len(GEMMA_DOCS) + 1
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert os.path.exists(tmp_path / "server.log")


@pytest.mark.slow
def test_prox_stage_through_the_flow_heuristic_then_model(stack, ray_local, tmp_path):
    """The heuristic writer on the Readability pages, then the Gemma model writer (through the
    run's model actor) on a few documents; a second release of the same documents is answered
    from the response cache with no model request."""
    from collections import Counter

    import pyarrow as pa

    from flows.curate import run_curate
    from tasks.config import InputSpec, PipelineConfig
    from tasks.storage import StorageSpec
    from tests.corpora import write_jsonl
    from tests.releases import prefect_runs, verify_release

    root = str(tmp_path / "corpus")
    pages = InputSpec(uri=str(shared("web_pages_readability/web_pages_readability.parquet")), source="pages",
                      columns={"text": "page_text"})
    m = run_curate(PipelineConfig(release="prox-h", output=root, inputs=[pages],
                                  prox={"enabled": True, "writer": "heuristic"}))
    storage = StorageSpec(root).open()
    verify_release(storage, m)
    p = m["prox"]
    assert p["writer"] == "heuristic" and p["doc_programs"] == m["funnel"][-1]["docs_in"]
    assert 0.5 < p["token_retention"] < 1 and p["ops"]["remove_lines"] > 0
    assert m["funnel"][-1]["modified"] > 0.8 * m["funnel"][-1]["docs_out"]
    assert "llm" not in m
    attrs = pa.concat_tables([storage.read_parquet(f["path"]) for f in m["outputs"]["attributes"]
                              if "/attributes/prox/" in f["path"]])
    assert attrs.num_rows == m["funnel"][-1]["docs_in"]
    for joined in attrs.column("prox__program__chunks").to_pylist():
        for program in (joined or "").split(stage.CHUNK_SEPARATOR):
            assert parse_program(program).errors == []

    write_jsonl(tmp_path / "few" / "docs.jsonl", [{"text": t} for t in GEMMA_DOCS])
    few = InputSpec(uri=str(tmp_path / "few"), source="few")

    def model_cfg(release: str) -> PipelineConfig:
        return PipelineConfig(release=release, output=root, inputs=[few], near_dedup={"cross_release": False},
                              # the 270M base model drops every document at document level (see the
                              # in-process test), so this run exercises the chunk programs
                              prox={"enabled": True, "writer": "model", "doc_level": False, "chunk_tokens": 200,
                                    "max_chunk_program_tokens": 96, "max_doc_program_tokens": 8},
                              llm={"n_ctx": 2048})

    m1 = run_curate(model_cfg("prox-m1"))
    verify_release(storage, m1)
    usage = m1["llm"]["total"]
    programs = m1["prox"]["programs_run"]
    print("model writer:", m1["prox"]["outcomes"], m1["prox"]["ops"], usage)
    assert m1["prox"]["writer"] == "model" and programs >= len(GEMMA_DOCS)
    assert usage["requests"] == programs and usage["cache_hits"] == 0 and usage.get("failures", 0) == 0
    # grammar-constrained: every program parses; whether its line numbers fit the chunk is the
    # interpreter's call (a misplaced range voids that chunk's program and is counted)
    attrs1 = pa.concat_tables([storage.read_parquet(f["path"]) for f in m1["outputs"]["attributes"]
                               if "/attributes/prox/" in f["path"]])
    for joined in attrs1.column("prox__program__chunks").to_pylist():
        print("chunk programs:", joined)
        for program in joined.split(stage.CHUNK_SEPARATOR):
            assert parse_program(program).errors == [] and parse_program(program).calls
    failed = sum(1 for e in attrs1.column("prox__program__errors").to_pylist() if e)
    assert m1["prox"]["chunk_failure_rate"] == failed / m1["prox"]["chunk_programs"]
    funnel = m1["funnel"][-1]
    assert funnel["docs_in"] == len(GEMMA_DOCS) == funnel["docs_out"] + sum(funnel["dropped"].values())
    from tasks.metrics import families, manifest_samples

    families = families()
    manifest_samples(families, m1)
    sent = {s.labels["stage"]: s.value for s in families["model_requests"].samples if s.name.endswith("_total")}
    tokens = {s.labels["stage"]: s.value for s in families["model_tokens"].samples if s.name.endswith("_total")}
    assert sent["prox"] == usage["requests"] and tokens["prox"] == usage["prompt_tokens"] + usage["completion_tokens"]
    m2 = run_curate(model_cfg("prox-m2"))
    assert m2["llm"]["total"].get("requests", 0) == 0 and m2["llm"]["total"]["cache_hits"] == programs
    assert m2["prox"]["outcomes"] == m1["prox"]["outcomes"]
    _, task_runs = prefect_runs(m1["flow_run_id"])
    assert Counter(t["name"].rsplit("-", 1)[0] for t in task_runs)["prox"] == 1
