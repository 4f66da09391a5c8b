"""The inputs and ingest's settings (the `inputs` and `ingest` sections), below the pipeline
file (``tasks.config`` assembles them) so that ingest and the readers of labelled inputs need
not import the whole pipeline model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.config_base import ConfigModel, safe_name


class ColumnMap(ConfigModel):
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
    html: str | None = Field(
        None, title="HTML column",
        description="Column holding the page's HTML (string, or bytes decoded with charset detection); "
        "when set, the extract stage turns it into the document text and `text` is not read.",
    )


class InputSpec(ConfigModel):
    """One input: a file, a folder (searched recursively) or a glob, at any fsspec URL."""

    uri: str = Field(..., title="Input URL", description="File, folder or glob: plain path, file://, s3://.")
    source: str | None = Field(None, title="Source name", description="Name of the source; default: the file or folder name.")
    format: Literal["auto", "parquet", "jsonl", "warc", "wet"] = Field(
        "auto", title="Format",
        description="'auto' decides by file name (.warc, .warc.gz, .wet, .wet.gz included).")
    columns: ColumnMap = Field(default_factory=ColumnMap, title="Column map")

    _check_source = field_validator("source")(lambda v: safe_name(v, "source"))


class IngestConfig(ConfigModel):
    unicode_form: Literal["NFC", "NFKC", "none"] = Field("NFC", title="Unicode normalization")
    max_chars: int | None = Field(None, ge=1, title="Longest document kept", description="Longer documents are rejected; empty: no limit.")
