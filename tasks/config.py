"""The pipeline file: one YAML document validated by these pydantic models.

The same models are the parameters of the Prefect flows, so the Prefect UI renders a form
from their titles, descriptions, defaults and enums.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from tasks import registry
from tasks.config_base import ConfigModel, safe_name

# The stages' own settings, declared in their packages and assembled here (imports point down:
# a stage package's config module imports only the base)
from tasks.decontam.config import DecontamConfig, EvalSet
from tasks.dedup.config import ExactDedupConfig, NearDedupConfig
from tasks.errors import ConfigError, StageOrderError
from tasks.extract.config import ExtractConfig
from tasks.ingest_config import ColumnMap, IngestConfig, InputSpec
from tasks.leaner.config import GENRES, Genre, LeanerConfig
from tasks.llm.config import LLMConfig
from tasks.pii.config import PiiConfig
from tasks.prox.config import ProxConfig
from tasks.quality.config import (
    C4Tagger,
    ClassifierConfig,
    CombinedScoreConfig,
    HeuristicTagger,
    LanguageIdConfig,
    QualityConfig,
    QualityRule,
    QualityThreshold,
)
from tasks.tokens_config import TokenizerConfig

__all__ = [
    "GENRES", "C4Tagger", "ClassifierConfig", "ColumnMap", "CombinedScoreConfig", "ConfigError", "ConfigModel",
    "DecontamConfig", "EvalSet", "ExactDedupConfig", "ExecutionConfig", "ExtractConfig", "Genre", "HeuristicTagger", "IngestConfig", "InputSpec", "LLMConfig",
    "LanguageIdConfig", "LeanerConfig", "NearDedupConfig", "PiiConfig", "PipelineConfig", "ProxConfig", "QualityConfig",
    "QualityRule", "QualityThreshold", "StorageConfig", "TokenizerConfig", "config_json_schema", "load_config", "parse_config",
    "safe_name",
]

LATER_SECTIONS = ("extract", "decontaminate", "pii", "tokenizer")
PIPELINE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# fields added to a section after releases were made with it: (section, field) -> the default at
# which public_dict leaves them out, so that those releases' configs keep their checksums
LATER_FIELDS: dict[tuple[str, str], Any] = {
    ("quality", "evaluate"): [],
    ("quality", "engine"): "fast",
    ("leaner", "content_check"): "learned",
}


class ExecutionConfig(ConfigModel):
    ray_address: str | None = Field(None, title="Ray address", description="Join this Ray cluster; empty: RAY_ADDRESS, else a local Ray.")
    max_retries: int = Field(2, ge=0, le=10, title="Retries per shard task")
    retry_delay_seconds: float = Field(2.0, ge=0, title="Delay between retries (s)")
    fail_fast: bool = Field(False, title="Fail fast", description="Abort the release when any input file cannot be read.")
    shard_rows: int = Field(200_000, ge=1000, title="Rows per shard", description="Parquet inputs with more rows are split by row group.")


# the storage keys a config may carry (from a pipeline file only): never in the run form, a
# deployment's parameters, a flow run's parameters or anything a release writes
STORAGE_KEY_FIELDS = ("access_key_id", "secret_access_key")


class StorageConfig(ConfigModel):
    """Object-storage settings. Keys given here are moved into the process environment and never recorded."""

    endpoint_url: str | None = Field(None, title="S3 endpoint URL", description="Default: AWS_ENDPOINT_URL.")
    region: str | None = Field(None, title="S3 region")
    scratch_compression: Literal["auto", "none", "zstd"] = Field(
        "auto", title="Scratch compression",
        description="How intermediate files under state/work/ are written: none (cheapest in CPU, about twice the "
                    "bytes of zstd), zstd (level 1), or auto: none on a local disk, zstd on object storage. "
                    "Published files are always zstd level 3.")
    # Keys are read from a pipeline file only, never offered in the UI's run form: Prefect keeps
    # a flow run's parameters in clear text in its database (and shows them on the run's page).
    access_key_id: SkipJsonSchema[SecretStr | None] = Field(None, title="Access key id",
                                                            description="Default: AWS_ACCESS_KEY_ID.")
    secret_access_key: SkipJsonSchema[SecretStr | None] = Field(None, title="Secret access key",
                                                                description="Default: AWS_SECRET_ACCESS_KEY.")


class PipelineConfig(ConfigModel):
    """A whole curation run: inputs, stages and how to execute them."""

    name: str | None = Field(
        None, title="Pipeline name",
        description="Names this pipeline's deployments, tags and limits on a shared Prefect server "
                    "(required by `refinery serve`): lower-case letters, digits and '-'.")
    release: str | None = Field(None, title="Release id", description="Default: a time-based id. Rerunning an id resumes it.")
    output: str | None = Field(None, title="Corpus root", description="Where releases are published (path, file://, s3://).")
    inputs: list[InputSpec] = Field(default_factory=list, title="Inputs")
    stages: list[str] | None = Field(
        None, title="Stage order",
        description="The stages to run, in order, ingest first (names: docs/architecture.md). Empty: "
                    "ingest, exact_dedup, near_dedup, quality, prox, leaner, each when its section is enabled. "
                    "A listed stage runs; for web text, refine (prox) before near_dedup (docs/architecture.md).")
    ingest: IngestConfig = Field(default_factory=IngestConfig, title="Ingest")
    extract: ExtractConfig = Field(default_factory=ExtractConfig, title="HTML extraction")
    exact_dedup: ExactDedupConfig = Field(default_factory=ExactDedupConfig, title="Exact dedup")
    near_dedup: NearDedupConfig = Field(default_factory=NearDedupConfig, title="Near-duplicate dedup")
    decontaminate: DecontamConfig = Field(default_factory=DecontamConfig, title="Benchmark decontamination")
    quality: QualityConfig = Field(default_factory=QualityConfig, title="Quality")
    prox: ProxConfig = Field(default_factory=ProxConfig, title="ProX refinement")
    leaner: LeanerConfig = Field(default_factory=LeanerConfig, title="Leaner rewriting")
    pii: PiiConfig = Field(default_factory=PiiConfig, title="Personal data (PII)")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, title="Tokenizer",
                                       description="Counts the release's tokens as the model will see them.")
    llm: LLMConfig = Field(default_factory=LLMConfig, title="Language model")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig, title="Execution")
    storage: StorageConfig = Field(default_factory=StorageConfig, title="Storage")

    _check_release = field_validator("release")(lambda v: safe_name(v, "release"))

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        # a DNS-label-like slug: it becomes part of deployment names, tags and a concurrency-limit
        # name, which must stay unambiguous and URL-safe on a server shared by several teams
        if v is not None and not PIPELINE_NAME_RE.match(v):
            raise ValueError(f"pipeline name {v!r} must match {PIPELINE_NAME_RE.pattern}")
        return v

    @model_validator(mode="after")
    def _check_stages(self) -> PipelineConfig:
        """A listed stage runs and an unlisted one does not: the sections' `enabled` follow
        `stages`, and a section that says otherwise explicitly is a conflict."""
        if self.stages is None:
            return self
        try:
            registry.check_order(self.stages, self)
        except StageOrderError as exc:
            raise ValueError(f"stages: {exc}") from None
        for st in registry.stages():
            section = getattr(self, st.config_key, None) if st.config_key else None
            if section is None or "enabled" not in type(section).model_fields:
                continue
            on = st.name in self.stages
            if "enabled" in section.model_fields_set and section.enabled != on:
                raise ValueError(f"stages: {st.config_key}.enabled is {str(section.enabled).lower()} but stages "
                                 f"{'lists' if on else 'leaves out'} {st.name}")
            if section.enabled != on:
                setattr(self, st.config_key, type(section).model_validate(
                    {**section.model_dump(exclude_unset=True), "enabled": on}))
        if self.quality.thresholds and "quality" not in self.stages:
            raise ValueError("stages: quality.thresholds need the quality stage, which stages leaves out")
        return self

    def public_dict(self) -> dict[str, Any]:
        """The config as recorded in the manifest and in Prefect: secrets removed (and an
        empty `stages`, so that a config from before it keeps its checksum)."""
        data = self.model_dump(mode="json")
        if data.get("stages") is None:
            data.pop("stages", None)
        # sections added after a release may have started are left out while at their
        # defaults: its rerun must find the same config checksum
        for key in LATER_SECTIONS:
            if data.get(key) == type(getattr(self, key))().model_dump(mode="json"):
                data.pop(key, None)
        # settings added later, left out at their defaults for the same reason
        for (section, key), default in LATER_FIELDS.items():
            if key in data.get(section, {}) and data[section][key] == default:
                del data[section][key]
        for spec in data.get("inputs", []):
            if spec.get("columns", {}).get("html", "") is None:
                del spec["columns"]["html"]
        for key in STORAGE_KEY_FIELDS:
            data["storage"].pop(key, None)
        return data

    def has_secrets(self) -> bool:
        return any(getattr(self.storage, key) is not None for key in STORAGE_KEY_FIELDS)

    def export_secrets_to_env(self) -> PipelineConfig:
        """Move credentials into this process's environment (inherited by Ray workers) and
        return the config without them, so that no later step can record them."""
        if self.storage.access_key_id is not None:
            os.environ["AWS_ACCESS_KEY_ID"] = self.storage.access_key_id.get_secret_value()
        if self.storage.secret_access_key is not None:
            os.environ["AWS_SECRET_ACCESS_KEY"] = self.storage.secret_access_key.get_secret_value()
        return self.model_copy(
            update={"storage": self.storage.model_copy(update=dict.fromkeys(STORAGE_KEY_FIELDS))}
        )


MAX_CONFIG_BYTES = 1_000_000
MAX_YAML_NODES = 100_000  # after expanding aliases: a real pipeline file has a few hundred
MAX_ERROR_CHARS = 300


def _one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


def format_validation_error(exc: ValidationError, origin: str) -> str:
    """One line: the file, then each bad key and its problem (values cut short)."""
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else _one_line(err["msg"], 200)
        parts.append(f"{loc}: {msg}")
    more = f"; and {len(exc.errors()) - 10} more" if len(exc.errors()) > 10 else ""
    return f"invalid pipeline config {origin}: " + "; ".join(parts) + more


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """How many nodes the YAML graph has once every alias is expanded (what validating and
    recording the config will walk), counted without expanding: an alias bomb of a few
    hundred bytes stands for billions of nodes."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = 1  # a recursive alias: counted once, refused by the loader anyway
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        memo[id(n)] = total = min(total, limit + 1)
        return total

    return size(node)


def _read_yaml(path: Path) -> Any:
    try:
        if path.is_dir():
            raise ConfigError(f"pipeline config {path}: is a folder, not a YAML file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"pipeline config {path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"pipeline config {path}: cannot read it: {_one_line(exc.strerror or exc)}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"pipeline config {path}: {len(data):,} bytes, more than a pipeline file has "
                          f"(limit {MAX_CONFIG_BYTES:,})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"pipeline config {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(f"pipeline config {path}: its aliases expand to more than {MAX_YAML_NODES:,} values "
                              "(a YAML alias bomb?)")
        return yaml.safe_load(text)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"pipeline config {path}: not valid YAML: {_one_line(problem)}{where}") from None
    except RecursionError:
        raise ConfigError(f"pipeline config {path}: not valid YAML: nested too deeply") from None


def parse_config(data: dict[str, Any], origin: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None


def load_config(path: str | Path | None, **overrides: Any) -> PipelineConfig:
    """Read a YAML pipeline file (or start empty) and apply CLI overrides."""
    data: dict[str, Any] = {}
    origin = "<command line>"
    if path is not None:
        origin = str(path)
        loaded = _read_yaml(Path(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"pipeline config {path}: the top level must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    return parse_config(data, origin)


def config_json_schema() -> dict[str, Any]:
    """The pipeline file's JSON schema (for editors): the run form's, plus the storage keys,
    which a file may hold but the form never offers."""
    schema = PipelineConfig.model_json_schema()
    props = schema["$defs"]["StorageConfig"]["properties"]
    for name in STORAGE_KEY_FIELDS:
        field = StorageConfig.model_fields[name]
        props[name] = {**TypeAdapter(SecretStr | None).json_schema(), "default": None, "title": field.title,
                       "description": field.description}
    return schema
