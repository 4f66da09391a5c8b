"""The exact and near dedup stages' settings (the `exact_dedup` and `near_dedup` sections)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config_base import ConfigModel


class ExactDedupConfig(ConfigModel):
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


class NearDedupConfig(ConfigModel):
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
