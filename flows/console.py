"""What `refinery run` shows in the terminal: one live line per stage (shards done/total,
documents in and out so far, elapsed), while Prefect's and Ray's per-task log lines go to a
log file (and to the Prefect UI, as always). `-v` puts them back on the terminal."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tasks import parallel

# Loggers whose console output becomes file output: Prefect's (flow and task runs, the client)
# and Ray's driver-side messages.
ROUTED_LOGGERS = ("", "prefect", "ray")


class StageProgress:
    """A rich progress table fed by the shard listener of tasks.parallel."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TextColumn("shards  {task.fields[docs]}"), TimeElapsedColumn(),
            console=console, transient=False, refresh_per_second=4)
        self.rows: dict[str, TaskID] = {}
        self.docs: dict[str, list[int]] = {}
        self._remove = None

    def __call__(self, stage: str, done: int, total: int, result: dict[str, Any] | None) -> None:
        if stage not in self.rows:
            self.docs[stage] = [0, 0]
            self.rows[stage] = self.progress.add_task(stage, total=total, docs="")
        funnel = (result or {}).get("funnel")
        if funnel:
            self.docs[stage][0] += funnel.get("docs_in", 0)
            self.docs[stage][1] += funnel.get("docs_out", 0)
        d_in, d_out = self.docs[stage]
        self.progress.update(self.rows[stage], completed=done, total=total,
                             docs=f"{d_in:,} → {d_out:,} docs" if d_in else "")

    def __enter__(self) -> StageProgress:
        self.progress.start()
        self._remove = parallel.add_shard_listener(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._remove:
            self._remove()
        self.progress.stop()


class LogsToFile:
    """Send this process's console log lines (Prefect's flow and task runs and client, Ray's
    driver) to ``path`` instead of the terminal, and keep Ray's workers' output out of the
    driver's terminal (it stays in Ray's session logs; task logs reach the Prefect UI)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
        self.handler: logging.FileHandler | None = None
        self.quiet_before = parallel.QUIET_DRIVER

    def __enter__(self) -> LogsToFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in ROUTED_LOGGERS:
            logger = logging.getLogger(name)
            console = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                       and not isinstance(h, logging.FileHandler)]
            self.saved.append((logger, console, logger.propagate))
            for h in console:
                logger.removeHandler(h)
            if name == "" or console:
                logger.addHandler(self.handler)
                logger.propagate = not name
        parallel.QUIET_DRIVER = True
        return self

    def __exit__(self, *exc: Any) -> None:
        parallel.QUIET_DRIVER = self.quiet_before
        for logger, console, propagate in self.saved:
            logger.removeHandler(self.handler)
            for h in console:
                logger.addHandler(h)
            logger.propagate = propagate
        if self.handler:
            self.handler.close()


def run_log_path(home: Path) -> Path:
    return home / "logs" / f"run-{time.strftime('%Y%m%dT%H%M%S')}-{time.monotonic_ns() % 10**6:06d}.log"
