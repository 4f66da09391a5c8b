"""Compile the numba kernels while the local stack starts.

A fresh install has no compiled kernels on disk: the first Ray workers of the first run then
compile the same kernels side by side (measured on the bundled default input: the first two
shards of exact dedup took 15 s each under load, the others 0.1 s). Compiling them once in the
driver, in a thread while the Prefect server starts (the driver only waits then), fills the
on-disk cache the workers load from. Nothing depends on it finishing: a worker that starts
first compiles for itself, as before.
"""

from __future__ import annotations

import contextlib
import threading

from tasks.config import PipelineConfig


def _warm(config: PipelineConfig) -> None:
    import pyarrow as pa

    from tasks.kernels import word_counts

    # the same Arrow types as a shard's work table, so that the same specializations compile
    texts = pa.chunked_array([pa.array(["Warm the compiled kernels of the first run, über ça.", ""], pa.string())])
    word_counts(texts)
    if config.near_dedup.enabled:
        from tasks.dedup import near

        params = config.near_dedup.params()
        work = pa.table({"id": ["a", "b"], "text": texts, "order": pa.array([0, 1], pa.int64())})
        _, sigs = near.signature_table(work, params)
        near.band_table(work.column("order").to_numpy(), sigs, params)


def start_kernel_warmup(config: PipelineConfig) -> threading.Thread:
    def run() -> None:
        # an optimization only: the workers compile whatever this did not
        with contextlib.suppress(Exception):
            _warm(config)

    thread = threading.Thread(target=run, name="refinery-kernel-warmup", daemon=True)
    thread.start()
    return thread
