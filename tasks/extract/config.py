"""The `extract:` block of a pipeline file (HTML to main text). The web inputs' own fields
(``InputSpec.format: warc | wet``, ``ColumnMap.html``) are in tasks/config.py."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_base import ConfigModel

EXTRACTORS = ("resiliparse", "trafilatura")


class ExtractConfig(ConfigModel):
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
