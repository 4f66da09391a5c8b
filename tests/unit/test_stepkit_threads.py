"""Steps run in threads of one task (``tasks.stepkit.in_threads``): the global phase of a
small near-dedup run reduces its partitions that way while the run's other workers wait."""

from __future__ import annotations

import os
import threading

import pytest

from tasks import layout
from tasks.stepkit import STEP_NODE, THREAD_CPU, in_threads, once
from tasks.storage import ARROW_POOL
from tests.builders import pipeline_config, run_context, shared_input


def _ctx(tmp_path):
    return run_context(pipeline_config(tmp_path / "out", shared_input(
        "web_pages_scrapinghub/web_pages_scrapinghub.parquet", "pages", text="page_text", id="id")))


def test_steps_in_threads_keep_their_order_the_callers_context_and_their_markers(tmp_path):
    ctx = _ctx(tmp_path)
    token = STEP_NODE.set("node-a")
    try:
        def step(k: int) -> dict:
            return once(ctx, "threaded", f"s{k}", lambda storage: {
                "k": k, "thread": threading.current_thread().name, "node_seen": STEP_NODE.get(),
                "thread_cpu": THREAD_CPU.get(), "arrow_pool": ARROW_POOL.get()})

        out = in_threads(step, list(range(6)), 2)
        inline = in_threads(step, [6], 2)  # one item: no pool
    finally:
        STEP_NODE.reset(token)
    assert [m["k"] for m in out] == list(range(6))
    assert all(m["node_seen"] == "node-a" and m["node"] == "node-a" for m in out)
    if len(os.sched_getaffinity(0)) > 1:
        assert {m["thread"] for m in out} <= {"refinery-step_0", "refinery-step_1"}
        # each step's marker says its CPU is its thread's, and its Parquet reads stay on that
        # thread (Arrow's pool would decode unseen by the thread's clock)
        assert all(m["thread_cpu"] and not m["arrow_pool"] and m["cpu_clock"] == "thread" for m in out)
    assert inline[0]["thread"] == threading.current_thread().name and not inline[0]["thread_cpu"]
    assert inline[0]["arrow_pool"] and "cpu_clock" not in inline[0]
    assert not THREAD_CPU.get() and ARROW_POOL.get()  # the caller's own context is untouched
    storage = ctx.storage.open()
    for k in range(7):  # every step left its marker, the proof that it completed
        assert storage.read_json(layout.marker_path(ctx.release, "threaded", f"s{k}"))["k"] == k


def test_a_failing_step_in_a_thread_fails_the_call(tmp_path):
    ctx = _ctx(tmp_path)

    def step(k: int) -> dict:
        def compute(storage):
            if k == 2:
                raise ValueError("partition 2 is bad")
            return {"k": k}
        return once(ctx, "threaded_fail", f"s{k}", compute)

    with pytest.raises(ValueError, match="partition 2 is bad"):
        in_threads(step, list(range(4)), 2)
    storage = ctx.storage.open()
    assert storage.read_json_or_none(layout.marker_path(ctx.release, "threaded_fail", "s2")) is None
    assert storage.read_json(layout.marker_path(ctx.release, "threaded_fail", "s3"))["k"] == 3
