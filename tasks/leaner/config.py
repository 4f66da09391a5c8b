"""The leaner stage's settings (the `leaner` section)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_base import ConfigModel

GENRES = ("web", "book", "wiki", "textbook", "conversation", "code", "instruction")
Genre = Literal["web", "book", "wiki", "textbook", "conversation", "code", "instruction"]


class LeanerConfig(ConfigModel):
    """Stage 6: TinyHelen-style rewriting into simple English, validated (docs/leaner.md)."""

    enabled: bool = Field(False, title="Run the leaner stage")
    genre: Literal["auto", "web", "book", "wiki", "textbook", "conversation", "code", "instruction"] = Field(
        "auto", title="Genre", description="auto: metadata `genre`, then genre_by_source, then detection.")
    genre_by_source: dict[str, Genre] = Field(default_factory=dict, title="Genre per source")
    preclean: bool = Field(True, title="Noise pre-clean (not for code)")
    anonymize: bool = Field(True, title="Anonymize entities")
    vocab_size: int = Field(2000, ge=100, le=50000, title="Lean vocabulary size")
    window_tokens: dict[Genre, int] = Field(
        default_factory=lambda: {"web": 300, "book": 300, "wiki": 300, "textbook": 600, "conversation": 600,
                                 "code": 600, "instruction": 300},
        title="Window size per genre (tokens)")
    max_output_tokens: int = Field(768, ge=16, title="Longest rewrite of a window (tokens)")
    temperature: float = Field(0.8, ge=0, le=2, title="Temperature")
    top_p: float = Field(0.95, gt=0, le=1, title="Top-p")
    min_coverage: float = Field(0.7, ge=0, le=1, title="Coverage floor (prose)")
    code_min_coverage: float = Field(0.5, ge=0, le=1, title="Coverage floor (code)")
    require_rise: bool = Field(True, title="Coverage must rise")
    length_bands: dict[Genre, tuple[float, float]] = Field(
        default_factory=dict, title="Length-ratio band per genre",
        description="rewrite words / original words; default: multiples of the genre's measured median ratio, "
                    "0.4x to 3.0x with the learned content check (chosen with its model), 0.4x to 1.8x with floors.")
    lid_min_score: float = Field(0.5, ge=0, le=1, title="Lowest English score of a rewrite")
    max_placeholders_per_100_words: float = Field(10.0, ge=0, title="Placeholder bound (per 100 words)")
    content_check: Literal["learned", "floors"] = Field(
        "learned", title="Content decision",
        description="learned: one logistic regression over topic, fidelity, reach, fluency and per-half coverage "
                    "(tasks/leaner/models/content_logreg.json, docs/leaner.md); floors: the four floors below.")
    # floors of the content checks: the 1st percentile of the upstream reference rewrites on the
    # calibration half of tinyhelen_leaner_sample (scripts/calibrate_leaner_checks.py, docs/leaner.md)
    min_topic: float | None = Field(
        0.15, ge=0, le=1, title="Topic floor",
        description="Share of the rewrite's content weight aligned in order with the original; empty: off.")
    min_fidelity: float | None = Field(
        0.11, ge=0, le=1, title="Fidelity floor",
        description="The same share in the weaker half of the rewrite; empty: off.")
    min_reach: float | None = Field(
        0.69, ge=0, le=1, title="Reach floor",
        description="How far into the original the alignment goes (fails as fidelity); empty: off.")
    min_fluency: float | None = Field(
        -0.01, title="Fluency floor (bigram)",
        description="Mean word-order gain in nats per token (word salad scores below 0); empty: off.")
    fluency_model: Literal["bigram", "llm"] = Field(
        "bigram", title="Fluency model",
        description="bigram: the shipped word-order model (milliseconds); llm: mean token log-likelihood under "
                    "a GGUF model through llama.cpp (seconds per document on a CPU).")
    fluency_llm_model: str | None = Field(None, title="Fluency GGUF", description="Default: the bundled Gemma 3 270M.")
    fluency_llm_margin: float = Field(
        1.0, ge=0, title="Fluency margin (llm)",
        description="llm: the rewrite's mean log-likelihood may be at most this far below the original's (nats/token).")
    on_failure: Literal["keep_original", "drop"] = Field("keep_original", title="When a rewrite fails validation")
