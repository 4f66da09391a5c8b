"""The `decontaminate:` block of a pipeline file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.config_base import ConfigModel, safe_name


class EvalSet(ConfigModel):
    """One evaluation set: a Parquet or JSON Lines file and the columns whose text must not
    reach a release."""

    name: str = Field(..., title="Benchmark name", description="Names the benchmark in rejects, attributes and the manifest.")
    url: str = Field(..., title="URL", description="Parquet (.parquet) or JSON Lines (.jsonl, .json, optionally .gz) file; path, file:// or s3://.")
    columns: list[str] = Field(..., min_length=1, title="Columns",
                               description="Text columns of a row, joined by a newline before n-grams are taken (so n-grams spanning prompt and solution count too).")
    id_column: str | None = Field(None, title="Task id column", description="Column naming each row (e.g. task_id); empty: the row number.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return safe_name(v, "evaluation set name")


class DecontamConfig(ConfigModel):
    eval_sets: list[EvalSet] = Field(default_factory=list, title="Evaluation sets")
    n: int = Field(13, ge=3, le=64, title="N-gram length", description="Words per n-gram, on datatrove-normalized text.")
    mode: Literal["drop", "cut"] = Field("drop", title="Mode",
                                         description="drop: reject a contaminated document; cut: remove its contaminated spans (a document with nothing left is rejected).")
    min_matches: int = Field(1, ge=1, title="Minimum matches", description="Matched n-grams that make a document contaminated.")

    @model_validator(mode="after")
    def _unique(self) -> DecontamConfig:
        names = [s.name for s in self.eval_sets]
        dup = {x for x in names if names.count(x) > 1}
        if dup:
            raise ValueError(f"evaluation set names must be unique: {sorted(dup)}")
        return self
