"""Config models of web input and the extract stage.

Kept in this package until the pipeline file's models (tasks/config.py) take them in; until
then the stage and the readers take these models directly. What tasks/config.py needs:

- ``InputSpec.format``: add ``"warc"`` and ``"wet"`` to its Literal (``auto`` already finds
  ``.warc``, ``.warc.gz``, ``.wet``, ``.wet.gz`` by name), as :class:`WebInputSpec` does;
- ``ColumnMap.html``: the optional HTML column of a Parquet / JSONL input, as
  :class:`WebColumnMap` does;
- ``PipelineConfig.extract: ExtractConfig`` (the stage's own settings, below).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config import ColumnMap, InputSpec, _Model

EXTRACTORS = ("resiliparse", "trafilatura")


class WebColumnMap(ColumnMap):
    html: str | None = Field(
        None, title="HTML column",
        description="Column holding the page's HTML (string, or bytes decoded with charset detection); "
        "when set, the extract stage turns it into the document text and `text` is not read.",
    )


class WebInputSpec(InputSpec):
    format: Literal["auto", "parquet", "jsonl", "warc", "wet"] = Field(  # type: ignore[assignment]
        "auto", title="Format", description="'auto' decides by file name (.warc, .warc.gz, .wet, .wet.gz included).")
    columns: WebColumnMap = Field(default_factory=WebColumnMap, title="Column map")  # type: ignore[assignment]


class ExtractConfig(_Model):
    """HTML to main text. Rows that did not come from HTML (plain text inputs, WET records) pass
    through unchanged."""

    enabled: bool = Field(True, title="Extract main text from HTML")
    extractor: Literal["resiliparse", "trafilatura"] = Field(
        "resiliparse", title="Extractor",
        description="resiliparse: fast (about 10x trafilatura); trafilatura: more precise, slower.",
    )
    main_content: bool = Field(
        True, title="Main content only",
        description="Keep only what the extractor takes for the main content. Off: all visible text, one block "
        "per line (as a WET record), for a ProX stage after it to clean (resiliparse only).",
    )
    min_words: int = Field(
        1, ge=0, title="Fewest words kept",
        description="A page whose extracted text has fewer words is rejected ('too little text').",
    )
    language: bool = Field(True, title="Detect the language", description="resiliparse's fast detector.")
    max_html_bytes: int = Field(
        5_000_000, ge=1, title="Largest HTML page",
        description="Longer pages are rejected rather than parsed (crawl truncation limits are 1 MB to 5 MB).",
    )
