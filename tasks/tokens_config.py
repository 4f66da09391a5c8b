"""The `tokenizer:` block of a pipeline file (see tasks/tokens.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_base import ConfigModel


class TokenizerConfig(ConfigModel):
    enabled: bool = Field(True, title="Count tokens",
                          description="Count the published documents' tokens (manifest `totals.model_tokens`). "
                                      "The default tokenizer needs the llm extra; without it the count is left out "
                                      "and the manifest says why.")
    url: str | None = Field(None, title="Tokenizer URL",
                            description="A tokenizer.json (HF tokenizers) or a .gguf file (vocabulary only, via llama.cpp); "
                                        "path, file:// or s3://. Empty: the bundled Gemma 3 GGUF (needs the llm extra).")
    kind: Literal["auto", "hf", "gguf"] = Field("auto", title="Kind", description="auto: by the file name (.gguf or not).")
    engine: Literal["hf", "llama_cpp"] = Field(
        "hf", title="GGUF engine",
        description="hf: the GGUF's SentencePiece vocabulary converted once to HF tokenizers (same counts, ~8x faster); "
                    "llama_cpp: llama.cpp's own tokenizer (the reference; also for non-SentencePiece GGUFs).")
    sample: float = Field(1.0, gt=0, le=1, title="Sampled share",
                          description="1: every document is tokenized. Below 1: that share of documents (spread evenly) is, "
                                      "and totals are estimated from their tokens per byte, with a standard error.")
    add_special_tokens: bool = Field(False, title="Count special tokens",
                                     description="Count BOS/EOS and other special tokens the tokenizer adds to every document.")
