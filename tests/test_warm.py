"""The kernel warm-up of `refinery run` compiles what the first shards' workers would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_warmup_fills_the_cache_the_stage_code_loads(tmp_path):
    """In a copy of the package with no compiled kernels on disk, the warm-up writes numba's
    cache; a fresh process then runs a shard's near-dedup map and word counts without
    compiling anything (numba reports every signature as loaded from the cache)."""
    copy = tmp_path / "src"
    for pkg in ("tasks", "flows"):
        shutil.copytree(REPO / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    warm = ("from flows.warm import start_kernel_warmup; from tasks.config import PipelineConfig; "
            "start_kernel_warmup(PipelineConfig()).join()")
    # a tokenizer cache that already knows the pieces of the warm-up's own text (as after any
    # earlier run) beside a package copy with nothing compiled: the counter must compile anyway
    env = {**os.environ, "REFINERY_TOKENIZER_CACHE": str(tmp_path / "tokenizers")}
    known = ("import pyarrow as pa; from tasks.tokens import load_tokenizer; "
             "load_tokenizer().count(pa.array(['Compile the counter, über ça.\\n\\nzwei', "
             "'Warm the compiled kernels of the first run, über ça.']))")
    subprocess.run([sys.executable, "-c", known], cwd=REPO, env=env, check=True, timeout=900)
    assert list((tmp_path / "tokenizers").rglob("*")), "the tokenizer cache holds saved pieces"
    subprocess.run([sys.executable, "-c", warm], cwd=copy, env=env, check=True, timeout=900)
    assert list((copy / "tasks" / "dedup" / "__pycache__").glob("kernels.raw_word_signatures-*.nbc"))
    # the release token counter's walk over new pieces (the default tokenizer is on)
    assert list((copy / "tasks" / "__pycache__").glob("token_kernels.count_texts-*.nbc"))
    use = """
import pyarrow as pa
from tasks.config import PipelineConfig
from tasks.dedup import near, kernels as dk
from tasks import kernels as k
from tasks.kernels import word_counts
texts = pa.chunked_array([pa.array(["A real shard's text, with more words than a shingle.", "zwei"], pa.string())])
word_counts(texts)
params = PipelineConfig().near_dedup.params()
work = pa.table({"id": ["x", "y"], "text": texts, "order": pa.array([5, 6], pa.int64())})
_, sigs = near.signature_table(work, params)
near.band_table(work.column("order").to_numpy(), sigs, params)
compiled = {f"{m.__name__}.{n}": len(d.stats.cache_misses) for m in (k, dk) for n, d in vars(m).items()
            if hasattr(d, "stats") and d.signatures}
print(compiled)
assert compiled and not any(compiled.values()), compiled
"""
    out = subprocess.run([sys.executable, "-c", use], cwd=copy, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ray_is_started_early_only_for_a_private_local_ray(monkeypatch):
    """`refinery run` starts Ray ahead of the flow only when the run would start its own local
    Ray: a run that joins a cluster (config or RAY_ADDRESS) starts nothing, and the flow's
    task runner then finds nothing to adopt."""
    from flows import warm
    from tasks.config import PipelineConfig

    joins = PipelineConfig().model_copy(update={"execution": PipelineConfig().execution.model_copy(
        update={"ray_address": "ray://head.example:10001"})})
    assert warm.start_ray_early(joins, quiet=True) is None
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert warm.start_ray_early(PipelineConfig(), quiet=True) is None
    assert warm.take_early_ray() is None


def test_the_early_ray_start_needs_no_prefect_import():
    """The thread that starts Ray ahead of the flow imports Ray alone: importing Prefect too
    would start Ray only once the main thread's own Prefect import is done (tasks/ray_local.py)."""
    code = ("import sys, flows.warm, tasks.ray_local, tasks.timeline; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'prefect_ray', 'ray'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_early_start_and_the_runner_give_ray_the_same_keywords(monkeypatch):
    """Ray started ahead of the flow is adopted by the flow's runner: it must be the Ray the
    runner would have started (namespace, workers' environment, logging, no dashboard)."""
    from tasks.parallel import RayRunner
    from tasks.ray_local import local_init_kwargs, worker_env

    monkeypatch.setattr(os, "environ", os.environ.copy())  # the runner sets the workers' env here
    monkeypatch.setenv("REFINERY_HOME", "/tmp/refinery-home-test")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-runtime-env")
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    url = "http://127.0.0.1:1/api"
    for quiet in (True, False):
        for storage in (True, False):
            early, env = local_init_kwargs({}, {"env_vars": worker_env(url, storage)}, quiet)
            runner = RayRunner(address="local", needs_storage=storage).driver_init_kwargs(quiet, url)
            assert early == runner
            assert early["namespace"] == "prefect" and early["include_dashboard"] is False
            assert early["log_to_driver"] is (not quiet)
            # no runtime env: the workers Ray starts ahead for the first driver can take the
            # first tasks; the workers' environment is the driver's, which the runner set
            assert "runtime_env" not in early
            assert env["PREFECT_API_URL"] == url and env["REFINERY_HOME"] == "/tmp/refinery-home-test"
            assert ("AWS_ENDPOINT_URL" in env) is storage and "AWS_SECRET_ACCESS_KEY" not in env
            assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
            assert {k: os.environ[k] for k in env} == env
    # a cluster the run joins still gets the workers' environment as Ray's runtime env
    joined = RayRunner(address="ray://head.example:10001", needs_storage=False).driver_init_kwargs(True, url)
    assert joined["runtime_env"]["env_vars"]["PREFECT_API_URL"] == url
    # a runtime env the config gives (other than variables) is still Ray's
    kwargs, env = local_init_kwargs({}, {"env_vars": {"A": "1"}, "py_modules": ["/x"]}, True)
    assert kwargs["runtime_env"] == {"py_modules": ["/x"]} and env == {"A": "1"}


def test_timeline_lines_of_several_processes_come_back_in_time_order(tmp_path, monkeypatch):
    """REFINERY_TIMELINE collects one line per event from every process that inherits it;
    unset, nothing is written."""
    from tasks import timeline

    path = tmp_path / "timeline.jsonl"
    timeline.mark("nothing")  # unset: a no-op
    monkeypatch.setenv(timeline.ENV, str(path))
    timeline.mark("parent_first", stage="ingest")
    code = "from tasks.timeline import mark; mark('child', shard='s1')"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ}, check=True, timeout=120)
    timeline.mark("parent_last")
    events = timeline.read(path)
    assert [e["event"] for e in events] == ["parent_first", "child", "parent_last"]
    assert events[0]["stage"] == "ingest" and events[1]["shard"] == "s1"
    assert events[1]["pid"] != events[0]["pid"] == events[2]["pid"] == os.getpid()


def test_a_process_whose_steps_overlap_in_threads_counts_their_union():
    """The benchmarks' step seconds (bench.common): steps of one task run side by side in
    threads (near dedup's global task) pair by stage and shard, and a process's overlapping
    steps count once; tasks of one process, one after another, pair as before."""
    from bench.common import paired_seconds

    def ev(t, event, pid=1, **f):
        return {"t": t, "event": event, "pid": pid, **f}

    steps = [ev(0.0, "step_start", stage="r", shard="p0"), ev(0.5, "step_start", stage="r", shard="p1"),
             ev(1.0, "step_start", stage="r", shard="p2"), ev(2.0, "step_end", stage="r", shard="p0"),
             ev(3.0, "step_end", stage="r", shard="p1"), ev(5.0, "step_end", stage="r", shard="p2"),
             ev(6.0, "step_start", stage="s", shard="p0"), ev(7.0, "step_end", stage="s", shard="p0"),
             ev(0.0, "step_start", pid=2, stage="r", shard="p3"), ev(4.0, "step_end", pid=2, stage="r", shard="p3")]
    assert paired_seconds(steps, "step_start", "step_end") == 5.0 + 1.0 + 4.0
    tasks = [ev(0.0, "task_enter", task="a"), ev(1.5, "task_exit", task="a"),
             ev(2.0, "task_enter", task="b"), ev(2.5, "task_exit", task="b")]
    assert paired_seconds(tasks, "task_enter", "task_exit") == 2.0


def test_a_flow_that_joins_a_ray_warms_each_of_its_cpus_once(ray_local, monkeypatch):
    """A served run joins its serve process's Ray, whose workers for this job start only when
    tasks arrive: the flow sends each CPU a warm-up task first, once per process and Ray."""
    import ray

    from flows import warm
    from tasks.config import PipelineConfig

    monkeypatch.setattr(warm, "_WARMED", {})
    monkeypatch.setattr(warm, "_EARLY", {})
    refs = warm.warm_workers(PipelineConfig())
    assert len(refs) == int(ray.cluster_resources()["CPU"]) == 2
    pids = ray.get(refs, timeout=300)
    assert all(isinstance(p, int) and p != os.getpid() for p in pids), "warmed in Ray's workers"
    assert warm.warm_workers(PipelineConfig()) == [], "warmed once per Ray"
    monkeypatch.setattr(warm, "_WARMED", {})
    monkeypatch.setattr(warm, "_EARLY", {"started": True, "seconds": 2.0})
    assert warm.warm_workers(PipelineConfig()) == [], "the CLI warmed the Ray it started ahead"
    # the CLI's early start failed and the runner started Ray itself: nobody warmed it
    monkeypatch.setattr(warm, "_EARLY", {"error": "RuntimeError: no", "seconds": 0.5})
    assert len(ray.get(warm.warm_workers(PipelineConfig()), timeout=300)) == 2


def test_a_flow_run_warms_its_workers_before_it_checks_and_plans_its_stages(monkeypatch):
    """The warm-up is sent first thing in the flow's body (it then overlaps the checks and
    planning); the test above calls warm_workers itself, so it would not see the call gone."""
    from flows import curate
    from tasks import registry
    from tasks.config import PipelineConfig

    calls: list[str] = []

    class Planned(Exception):
        pass

    def order(config):
        calls.append("order")
        raise Planned

    monkeypatch.setattr(curate, "warm_workers", lambda config: calls.append("warm"))
    monkeypatch.setattr(registry, "order", order)
    with pytest.raises(Planned):
        curate.run_release(PipelineConfig())
    assert calls == ["warm", "order"]
