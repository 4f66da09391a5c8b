"""The kernel warm-up of `refinery run` compiles what the first shards' workers would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO


def test_warmup_fills_the_cache_the_stage_code_loads(tmp_path):
    """In a copy of the package with no compiled kernels on disk, the warm-up writes numba's
    cache; a fresh process then runs a shard's near-dedup map and word counts without
    compiling anything (numba reports every signature as loaded from the cache)."""
    copy = tmp_path / "src"
    for pkg in ("tasks", "flows"):
        shutil.copytree(REPO / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    warm = ("from flows.warm import start_kernel_warmup; from tasks.config import PipelineConfig; "
            "start_kernel_warmup(PipelineConfig()).join()")
    # a tokenizer cache that already knows the pieces of the warm-up's own text (as after any
    # earlier run) beside a package copy with nothing compiled: the counter must compile anyway
    env = {**os.environ, "REFINERY_TOKENIZER_CACHE": str(tmp_path / "tokenizers")}
    known = ("import pyarrow as pa; from tasks.tokens import load_tokenizer; "
             "load_tokenizer().count(pa.array(['Compile the counter, über ça.\\n\\nzwei', "
             "'Warm the compiled kernels of the first run, über ça.']))")
    subprocess.run([sys.executable, "-c", known], cwd=REPO, env=env, check=True, timeout=900)
    assert list((tmp_path / "tokenizers").rglob("*")), "the tokenizer cache holds saved pieces"
    subprocess.run([sys.executable, "-c", warm], cwd=copy, env=env, check=True, timeout=900)
    assert list((copy / "tasks" / "dedup" / "__pycache__").glob("kernels.signatures-*.nbc"))
    # the release token counter's walk over new pieces (the default tokenizer is on)
    assert list((copy / "tasks" / "__pycache__").glob("token_kernels.count_texts-*.nbc"))
    use = """
import pyarrow as pa
from tasks.config import PipelineConfig
from tasks.dedup import near, kernels as dk
from tasks import kernels as k
from tasks.kernels import word_counts
texts = pa.chunked_array([pa.array(["A real shard's text, with more words than a shingle.", "zwei"], pa.string())])
word_counts(texts)
params = PipelineConfig().near_dedup.params()
work = pa.table({"id": ["x", "y"], "text": texts, "order": pa.array([5, 6], pa.int64())})
_, sigs = near.signature_table(work, params)
near.band_table(work.column("order").to_numpy(), sigs, params)
compiled = {f"{m.__name__}.{n}": len(d.stats.cache_misses) for m in (k, dk) for n, d in vars(m).items()
            if hasattr(d, "stats") and d.signatures}
print(compiled)
assert compiled and not any(compiled.values()), compiled
"""
    out = subprocess.run([sys.executable, "-c", use], cwd=copy, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ray_is_started_early_only_for_a_private_local_ray(monkeypatch):
    """`refinery run` starts Ray ahead of the flow only when the run would start its own local
    Ray: a run that joins a cluster (config or RAY_ADDRESS) starts nothing, and the flow's
    task runner then finds nothing to adopt."""
    from flows import warm
    from tasks.config import PipelineConfig

    joins = PipelineConfig().model_copy(update={"execution": PipelineConfig().execution.model_copy(
        update={"ray_address": "ray://head.example:10001"})})
    assert warm.start_ray_early(joins, quiet=True) is None
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert warm.start_ray_early(PipelineConfig(), quiet=True) is None
    assert warm.take_early_ray() is None
