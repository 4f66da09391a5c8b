"""Compile the numba kernels while the local stack starts; start the run's Ray ahead of the flow.

A fresh install has no compiled kernels on disk: the first Ray workers of the first run then
compile the same kernels side by side (measured on the bundled default input: the first two
shards of exact dedup took 15 s each under load, the others 0.1 s). Compiling them once in the
driver, in a thread while the Prefect server starts (the driver only waits then), fills the
on-disk cache the workers load from. Nothing depends on it finishing: a worker that starts
first compiles for itself, as before.

Starting a private local Ray takes seconds (its GCS, raylet and Python helpers start one after
the other), and its worker processes start only when the first tasks arrive, then import
Prefect and the stage code before the first shard runs: measured on 10k documents, 4.5 s of
Ray start and most of the first wave's 10 s went there. :func:`start_ray_early` starts Ray in
a thread as soon as the Prefect server is known, and sends every worker a warm-up task (stage
modules, cached kernels, the release tokenizer), while the main thread imports the flow and
creates the flow run; the flow's task runner then adopts that Ray (tasks/parallel.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

from tasks.config import PipelineConfig


def _warm(config: PipelineConfig) -> None:
    import pyarrow as pa

    from tasks.kernels import word_counts

    # the same Arrow types as a shard's work table, so that the same specializations compile
    texts = pa.chunked_array([pa.array(["Warm the compiled kernels of the first run, über ça.", ""], pa.string())])
    word_counts(texts)
    from tasks.text_norm import normalize_texts

    normalize_texts(texts.chunk(0), config.ingest.unicode_form)  # its scan, and the form's code points
    if config.near_dedup.enabled:
        from tasks.dedup import near

        params = config.near_dedup.params()
        work = pa.table({"id": ["a", "b"], "text": texts, "order": pa.array([0, 1], pa.int64())})
        _, sigs = near.signature_table(work, params)
        near.band_table(work.column("order").to_numpy(), sigs, params)


def _warm_token_counter(config: PipelineConfig) -> None:
    """Compile the release token counter's walk over new pieces (10-20 CPU-seconds on a fresh
    install), in the driver only: workers that did it too would compile it side by side."""
    if config.tokenizer.enabled:
        from tasks.tokens import load_tokenizer

        tok = load_tokenizer(config.tokenizer)
        if hasattr(tok, "compile_counter"):
            tok.compile_counter()


def start_kernel_warmup(config: PipelineConfig) -> threading.Thread:
    def run() -> None:
        # an optimization only: the workers compile whatever this did not
        with contextlib.suppress(Exception):
            _warm(config)
        with contextlib.suppress(Exception):
            _warm_token_counter(config)

    thread = threading.Thread(target=run, name="refinery-kernel-warmup", daemon=True)
    thread.start()
    return thread


def warm_process(config: PipelineConfig) -> int:
    """Load in this process what its first shard of ``config``'s run would: the stage
    modules, the compiled kernels (from numba's cache), the release tokenizer. Run once in
    every Ray worker at the start of a run; failures are left to the shard that needs it.
    Returns the process id (which worker it warmed)."""
    from tasks.timeline import mark

    mark("warm_start")
    import prefect.task_engine  # noqa: F401  every shard task runs in Prefect's task engine

    from tasks import registry

    registry.stages()
    with contextlib.suppress(Exception):
        _warm(config)
    if config.tokenizer.enabled:
        from tasks.tokens import load_tokenizer

        with contextlib.suppress(Exception):  # release_counts reports (or raises) it where it matters
            tok = load_tokenizer(config.tokenizer)
            if hasattr(tok, "load_walk"):
                tok.load_walk()  # loaded here like the ingest kernels above, not in the first shard
    mark("warm_done")
    return os.getpid()


_EARLY: dict[str, Any] = {}
_WARMED: dict[str, list[Any]] = {}
_WARMED_LOCK = threading.Lock()


def warm_workers(config: PipelineConfig, most: int = 256) -> list[Any]:
    """Send each CPU (at most ``most``) of the Ray this flow run uses a warm-up task, unless
    the CLI started that Ray ahead of the flow (it warmed its workers then) or this process
    already warmed it (a backfill's releases). A run that joins a Ray (a `refinery serve`
    process's, a cluster) gets new worker processes, which Ray starts only when tasks arrive:
    sent first thing in the flow, they start and import while the flow checks its stages and
    plans, not after (also when the CLI's early start failed and the runner started Ray).
    Returns the tasks' references (nothing waits for them)."""
    import ray

    if _EARLY.get("started") or not ray.is_initialized():
        return []
    address = ray.get_runtime_context().gcs_address
    with _WARMED_LOCK:  # a backfill's releases start side by side
        if address in _WARMED:
            return []
        remote = ray.remote(num_cpus=1)(warm_process).options(name="refinery-warm-worker")
        cpus = min(most, max(1, int(ray.cluster_resources().get("CPU", 1))))
        _WARMED[address] = [remote.remote(config) for _ in range(cpus)]
        return _WARMED[address]


def start_ray_early(config: PipelineConfig, quiet: bool, api_url: str | None = None) -> threading.Thread | None:
    """Start this run's private local Ray in a thread (nothing when the run joins a cluster);
    the flow's task runner waits for it and adopts it. Call once the Prefect server is known.
    ``quiet``: whether the run keeps Ray's output off the terminal (`refinery run` without -v);
    ``api_url``: the Prefect server's URL when it is still starting (Ray then starts beside it)."""
    if config.execution.ray_address or os.environ.get("RAY_ADDRESS") or _EARLY:
        return None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # what ray.init does in the main thread only: a SIGTERM then exits through atexit,
        # which stops Ray's processes with the driver
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))

    def run() -> None:
        try:
            # Ray alone: importing Prefect here too would start Ray only once the main thread's
            # imports are done (tasks/ray_local.py)
            from tasks.ray_local import check_server, init_local_ray

            url = api_url
            if url is None:  # the server the run uses is up (the CLI checked, or the user named it)
                url = os.environ["PREFECT_API_URL"]
                check_server(url)
            init_local_ray(url, uses_remote_storage(config), quiet, warm_process, (config,))
            _EARLY["started"] = True
        except Exception as exc:  # the task runner then starts Ray itself, and says why this failed
            _EARLY["error"] = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):  # whatever part of Ray did start goes with it
                import ray

                ray.shutdown()
        finally:
            _EARLY["seconds"] = time.perf_counter() - t0
            done.set()
        # Ray's GCS server and raylet die with the thread that started them (Linux's
        # PR_SET_PDEATHSIG follows the creating thread, not the process): this thread stays
        # until the process ends, so that they live as long as the driver, as before
        threading.Event().wait()

    done = threading.Event()
    _EARLY["done"] = done
    # the whole start as the flow may wait for it (thread start, imports, warm tasks), so that
    # the part it waited for is never more than this
    t0 = time.perf_counter()
    thread = threading.Thread(target=run, name="refinery-ray-start", daemon=True)
    thread.start()
    return thread


def take_early_ray() -> dict[str, Any] | None:
    """Wait for :func:`start_ray_early`'s Ray; once: what it did, and how long the caller waited."""
    done = _EARLY.pop("done", None)
    if done is None:
        return None
    t0 = time.perf_counter()
    done.wait()
    return {"started": _EARLY.get("started", False), "seconds": _EARLY.get("seconds", 0.0),
            "waited": time.perf_counter() - t0, "error": _EARLY.get("error")}


def uses_remote_storage(config: PipelineConfig) -> bool:
    """Whether the root or any input lives in object storage (not a local path or file://)."""
    urls = [config.output or "", *(i.uri for i in config.inputs)]
    return any("://" in u and not u.startswith("file://") for u in urls)
