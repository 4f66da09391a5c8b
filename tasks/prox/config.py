"""The ProX stage's settings (the `prox` section)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config_base import ConfigModel


class ProxConfig(ConfigModel):
    """Stage 5: per-document programs (ProX), see docs/prox.md."""

    enabled: bool = Field(False, title="Run the ProX stage")
    writer: Literal["auto", "heuristic", "learned", "model", "teacher"] = Field(
        "auto", title="Program writer",
        description="auto: model when the llm section names a model or a server, else learned; learned: a "
        "line model trained on labelled pages (`model`, default: the one in the package); teacher: "
        "instruction prompt for a chat model behind an OpenAI-compatible server.")
    model: str | None = Field(None, title="Learned writer model",
                              description="URL of a model.json.gz from `refinery prox train`; empty: the "
                              "model shipped in the package.")
    compat: bool = Field(False, title="Upstream semantics",
                         description="Run programs exactly as GAIR-NLP/ProX does (see docs/prox.md for the differences).")
    doc_level: bool = Field(True, title="Document-level pass (keep_doc/drop_doc)")
    chunk_level: bool = Field(True, title="Chunk-level pass (remove_lines/normalize)")
    doc_tokens: int = Field(2000, ge=16, title="Document-level input (tokens)")
    chunk_tokens: int = Field(1500, ge=16, title="Chunk size (tokens)")
    max_doc_program_tokens: int = Field(16, ge=4, title="Longest document-level program (tokens)")
    max_chunk_program_tokens: int = Field(256, ge=8, title="Longest chunk-level program (tokens)")
    heuristic: dict[str, int] = Field(default_factory=dict, title="Heuristic writer parameters",
                                      description="Fields of tasks.prox.heuristic.HeuristicParams.")

    @model_validator(mode="after")
    def _check(self) -> ProxConfig:
        from tasks.prox.heuristic import HeuristicParams

        try:
            HeuristicParams(**self.heuristic)
        except TypeError as exc:
            raise ValueError(f"prox.heuristic: {exc}") from None
        return self
