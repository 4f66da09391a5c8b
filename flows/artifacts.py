"""Prefect artifacts of a curate run: live progress, the funnel table, the report link."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)


def artifact_key(kind: str, release: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"{kind}-" + re.sub(r"[^a-z0-9-]+", "-", release.lower()).strip("-")


class Progress:
    """A progress artifact advanced as shard tasks finish. The number of task waves is not
    known in advance (component rounds), so it is estimated and the bar holds below 100% until
    the release is published."""

    def __init__(self, release: str, expected_waves: int):
        self.expected, self.waves, self.current = max(expected_waves, 1), 0, None
        self.id: UUID = create_progress_artifact(0.0, key=artifact_key("progress", release),
                                                 description=f"release {release}: planning")

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.current:
            self.current, self.waves = stage, self.waves + 1
        fraction = (self.waves - 1 + (done / total if total else 1.0)) / self.expected
        update_progress_artifact(self.id, round(min(99.0, 100 * fraction), 1), description=f"{stage}: {done}/{total}")

    def finish(self, text: str) -> None:
        update_progress_artifact(self.id, 100.0, description=text)


def publish_artifacts(manifest: dict[str, Any], report_url: str) -> None:
    release = manifest["release"]
    rows = [{"stage": st["stage"], "docs in": st["docs_in"], "docs out": st["docs_out"],
             "dropped": sum(st["dropped"].values()),
             "dropped by reason": ", ".join(f"{k}: {v}" for k, v in st["dropped"].items()) or "-",
             "tokens out": st["tokens_out"], "seconds": manifest["timing"].get(st["stage"], 0.0)}
            for st in manifest["funnel"]]
    create_table_artifact(rows, key=artifact_key("funnel", release), description=f"Funnel of release {release}")
    create_link_artifact(report_url, link_text=f"report of release {release}", key=artifact_key("report", release),
                         description=f"{manifest['totals']['documents']:,} documents published")
