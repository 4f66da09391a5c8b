"""A test's stage that holds every admitted run until ``PEERS`` runs of the same backfill have
reached it (a file barrier beside the corpus root): with a concurrency limit of two, the first
two runs can only finish together, so the test that uses it sees them overlap however fast or
slow the machine is, and a limit that admitted only one at a time fails by timeout, not by luck."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tasks.registry import Stage
from tasks.schema import to_rejects
from tasks.stepkit import MapResult, RunContext, once, read_work, total_words, write_result
from tasks.storage import Storage

NAME = "test_gate"
PEERS = 2
TIMEOUT_S = 600.0


def gate_dir(ctx: RunContext) -> Path:
    """Beside the corpus root, not in it: the barrier is the test's, not the release's."""
    return Path(ctx.config.output).parent / "gate"


def gate_step(ctx: RunContext, shard: str, prev_stage: str, final: bool) -> dict[str, Any]:
    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        arrived = gate_dir(ctx)
        arrived.mkdir(parents=True, exist_ok=True)
        (arrived / ctx.release).touch()
        deadline = time.monotonic() + TIMEOUT_S
        while len(list(arrived.iterdir())) < PEERS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ctx.release}: no other run reached the gate in {TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        result = MapResult(kept=work, rejects=to_rejects(work.slice(0, 0), NAME, "none"), docs_in=work.num_rows, tokens_in=total_words(work.column("text")))
        return write_result(storage, ctx, NAME, shard, result, final)

    return once(ctx, NAME, shard, compute)


STAGE = Stage(name=NAME, kind="map", rank=46, step=gate_step, reads="the previous stage's work table",
              writes="work table", summary=f"waits until {PEERS} runs have reached it (a test's stage)")
