"""An opt-in timeline of one run: where its wall clock goes outside the step functions.

Set ``REFINERY_TIMELINE=<file>`` and every process of a local run (the CLI, the Ray workers,
which inherit the driver's environment) appends one JSON line per event to that file:
``{"t": unix seconds, "pid": ..., "event": ..., **fields}``. Nothing happens when it is unset,
so the points below cost a dictionary lookup in normal runs. ``bench/minhash_vs_datatrove.py``
sets it and turns the lines into ``breakdown.timeline`` (bench/common.py, ``timeline_summary``).

Lines are written with one ``write`` on a file opened for appending, so lines of concurrent
processes do not interleave (each is far below the size Linux appends atomically).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

ENV = "REFINERY_TIMELINE"


def mark(event: str, **fields: Any) -> None:
    """Record ``event`` now, when the run keeps a timeline; never fails the run."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"t": time.time(), "pid": os.getpid(), "event": event, **fields}, default=str)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # a timeline is a measurement aid: an unwritable one must not stop a release


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events of a timeline file in time order (a torn last line is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return sorted(out, key=lambda e: e["t"])
