"""The leaner stage's declaration: one task per shard, with the model actor."""

from __future__ import annotations

from tasks.leaner.steps import leaner_step
from tasks.registry import Stage, register

STAGE = register(Stage(
    name="leaner", kind="model", rank=60, config_key="leaner", step=leaner_step, uses_model=lambda config: True,
    reads="the previous stage's work table", writes="work table; rejects/leaner; attributes/leaner; changes/leaner",
    summary="TinyHelen-style rewriting into simple English, validated"))
