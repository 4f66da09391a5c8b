"""What a stage calls: cached, budgeted completions from one model per Ray actor.

- The **service** holds the backend (the model is loaded once, in the service) and enforces
  the run's request and token budgets. Inside a Ray run it lives in a named Ray actor that the
  flow starts before the stage (``flows/model_actor.py``: Ray stays in the orchestration layer)
  and hands to every shard task as a :class:`CompletionService`; outside Ray it lives in this
  process.
- The **response cache** lives in object storage under ``state/llm_cache/``, one JSON object
  per (model, prompt, parameters) key: a rerun of a release sends no request for a prompt it
  has already answered. Failed completions are not cached.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks import layout
from tasks.llm.backends import Completion, Request, approx_tokens, make_backend
from tasks.llm.config import LLMConfig
from tasks.process_cache import load_once
from tasks.storage import Storage, canonical_json


class LLMService:
    """A backend plus the run's budgets. Thread-safe (a Ray actor may run it concurrently)."""

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self.backend = make_backend(cfg)
        self.requests = 0
        self.tokens = 0
        self.lock = threading.Lock()

    def model_id(self) -> str:
        return self.backend.model_id

    def complete(self, requests: list[Request]) -> list[Completion]:
        allowed: list[int] = []
        out: list[Completion | None] = [None] * len(requests)
        with self.lock:
            for i, _ in enumerate(requests):
                if self.cfg.max_requests is not None and self.requests >= self.cfg.max_requests:
                    out[i] = Completion("", 0, 0, error=f"budget: max_requests={self.cfg.max_requests} reached")
                elif self.cfg.max_total_tokens is not None and self.tokens >= self.cfg.max_total_tokens:
                    out[i] = Completion("", 0, 0, error=f"budget: max_total_tokens={self.cfg.max_total_tokens} reached")
                else:
                    self.requests += 1
                    allowed.append(i)
        done = self.backend.complete([requests[i] for i in allowed]) if allowed else []
        with self.lock:
            for i, c in zip(allowed, done, strict=True):
                self.tokens += c.prompt_tokens + c.completion_tokens
                out[i] = c
        return [c for c in out if c is not None]

    def usage(self) -> dict[str, int]:
        return {"requests": self.requests, "tokens": self.tokens}


class CompletionService(Protocol):
    """Where a client's uncached requests go: an :class:`LLMService` in this process, or the
    orchestration's handle on the run's model actor (``flows.model_actor.ActorService``)."""

    def complete(self, requests: list[Request]) -> list[Completion]: ...


@dataclass
class Usage:
    requests: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cache_hits": self.cache_hits, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "errors": dict(sorted(self.errors.items()))}


def cache_identity(cfg: LLMConfig) -> str:
    """What makes two answers to the same prompt interchangeable: the backend and the model."""
    if cfg.backend == "llama_cpp":
        import os

        from tasks.llm.backends import default_gguf

        path = cfg.model or default_gguf()
        return f"llama_cpp:{os.path.basename(path)}:{os.path.getsize(path)}"
    return f"openai:{cfg.model or 'default'}"


class LLMClient:
    def __init__(self, cfg: LLMConfig, storage: Storage, service: CompletionService | None = None):
        self.cfg = cfg
        self.storage = storage
        self.service = service
        self.identity = cache_identity(cfg)
        self.usage = Usage()

    def _service_complete(self, requests: list[Request]) -> list[Completion]:
        if self.service is not None:
            return self.service.complete(requests)
        service = load_once(("llm-service", canonical_json(self.cfg.model_dump(mode="json"))),
                            lambda: LLMService(self.cfg))
        return service.complete(requests)

    def key(self, r: Request) -> str:
        return hashlib.sha256(canonical_json({"model": self.identity, "prompt": r.prompt, **r.params(),
                                              "seed": self.cfg.seed})).hexdigest()

    def _path(self, key: str) -> str:
        return layout.llm_cache_path(key)

    def complete(self, requests: list[Request]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        keys = [self.key(r) for r in requests]
        misses = []
        for i, k in enumerate(keys):
            hit = self.storage.read_json_or_none(self._path(k)) if self.cfg.cache else None
            if hit is not None:
                out[i] = Completion(hit["text"], hit["prompt_tokens"], hit["completion_tokens"], cached=True,
                                    meta={"finish_reason": hit.get("finish_reason")})
                self.usage.cache_hits += 1
            else:
                misses.append(i)
        for start in range(0, len(misses), self.cfg.batch_size):
            batch = misses[start: start + self.cfg.batch_size]
            results = self._service_complete([requests[i] for i in batch])
            for i, c in zip(batch, results, strict=True):
                out[i] = c
                if c.error is not None:
                    self.usage.failures += 1
                    kind = c.error.split(":")[0]
                    self.usage.errors[kind] = self.usage.errors.get(kind, 0) + 1
                    continue
                self.usage.requests += 1
                self.usage.prompt_tokens += c.prompt_tokens
                self.usage.completion_tokens += c.completion_tokens
                if self.cfg.cache:
                    self.storage.write_json(self._path(keys[i]), {
                        "model": self.identity, "text": c.text, "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens, "finish_reason": c.meta.get("finish_reason")})
        return [c for c in out if c is not None]


def token_counter(cfg: LLMConfig | None):
    """Token counts from the model's own tokenizer when it is a local GGUF (vocabulary only is
    loaded), else :func:`approx_tokens`."""
    if cfg is None or cfg.backend != "llama_cpp":
        return approx_tokens

    def load():
        from llama_cpp import Llama

        from tasks.llm.backends import close_at_exit, default_gguf

        vocab = Llama(model_path=cfg.model or default_gguf(), vocab_only=True, verbose=False)
        close_at_exit(vocab)
        return vocab

    vocab = load_once(("llama-vocab", cfg.model), load)
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False))
