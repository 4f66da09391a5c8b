"""Benchmark decontamination: word n-gram overlap (13-grams by default, as GPT-3 and
datatrove) between documents and the evaluation sets a pipeline names.

Flow: :func:`load_indexes` (before any work: validates every evaluation set, builds or reuses
its n-gram index in storage), then :func:`decontaminate` per shard (plain function over an
Arrow table). See docs/hygiene.md.
"""

from __future__ import annotations

from tasks.decontam.config import DecontamConfig, EvalSet
from tasks.decontam.core import (
    INDEX_DIR,
    DecontamError,
    DecontamIndex,
    DecontamResult,
    decontaminate,
    load_indexes,
)

__all__ = ["INDEX_DIR", "DecontamConfig", "DecontamError", "DecontamIndex", "DecontamResult", "EvalSet",
           "decontaminate", "load_indexes"]
