"""Does each part of a rewrite speak about what its original speaks about? Sentence vectors.

The lemma chain of ``tasks/leaner/fidelity.py`` sees only shared words, and TinyHelen's
rewrites paraphrase: about a quarter of a reference's content weight lies on the chain, so a
third of another document's simple text looked like a loose stretch of a real rewrite
(docs/leaner.md, the positional blind spot). These measures compare meaning instead, with
WordLlama's ``l2_supercat`` model (PyPI ``wordllama``, MIT): a table of 256-dimension token
vectors trained contrastively on sentence pairs, where a text's vector is the sum of its
tokens' (what WordLlama's own mean pooling gives after normalizing). The table and tokenizer
ship inside the wheel; they are opened directly because the package's loader looks for the
tokenizer under another folder name and then tries to download it.

Each text's tokens are cut into ``CHUNKS`` equal runs and summed per window of ``SPAN``
consecutive runs: a third of the text wherever it starts, so the measures do not depend on
where a replaced part sits. ``FEATURES``:

- ``vec_whole``: cosine of the two texts;
- ``vec_rewrite_worst``: the rewrite's worst window against the whole original;
- ``vec_rewrite_rest``: the rewrite's worst window against the rest of the rewrite (a stretch
  of another text is about something else than the text around it, whatever the original);
- ``vec_rewrite_sum``: the worst sum of the two over the same window;
- ``vec_original_worst``: the original's worst window against the whole rewrite (a part the
  rewrite dropped).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

CHUNKS, SPAN = 9, 3
FEATURES = ("vec_whole", "vec_rewrite_worst", "vec_rewrite_rest", "vec_rewrite_sum", "vec_original_worst")
_TOKENIZER = ("tokenizers", "l2_supercat_tokenizer_config.json")
_TABLE = ("weights", "l2_supercat_256.safetensors")


@cache
def load() -> tuple[Any, np.ndarray]:
    """WordLlama's tokenizer and token table, from the installed wheel (no download)."""
    import importlib.util

    # the package's files only: importing ``wordllama`` itself runs logging.basicConfig(INFO) on
    # the root logger (every library's INFO lines then reach the workers' stderr) and evaluates
    # Path.home(), which raises without HOME and a passwd entry (containers with arbitrary UIDs)
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the leaner content check needs the `wordllama` package (a dependency of "
                           "corpus-refinery: rerun scripts/setup.sh)")
    from safetensors import safe_open
    from tokenizers import Tokenizer

    root = Path(next(iter(spec.submodule_search_locations)))
    tokenizer_path, table_path = root.joinpath(*_TOKENIZER), root.joinpath(*_TABLE)
    for path in (tokenizer_path, table_path):
        if not path.is_file():
            raise RuntimeError(f"{path}: missing from the installed wordllama package (expected in its wheel)")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    with safe_open(str(table_path), framework="np") as f:
        table = f.get_tensor("embedding.weight").astype(np.float32)
    return tokenizer, table


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


BLOCK = 1 << 15  # tokens gathered at once: 32 MB of vectors, whatever the text's length


def _run_sum(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    # gathered in blocks: a book of a million tokens would otherwise hold a gigabyte of vectors;
    # summed in float64 so that the block size and SIMD summation order do not show (below)
    total = np.zeros(table.shape[1], np.float64)
    for at in range(0, len(ids), BLOCK):
        total += table[ids[at:at + BLOCK]].sum(0, dtype=np.float64)
    return total


def _windows(text: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The text's summed token vectors and the sum over each window of SPAN of CHUNKS runs."""
    tokenizer, table = load()
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    cuts = [round(i * len(ids) / CHUNKS) for i in range(CHUNKS + 1)]
    runs = np.stack([_run_sum(table, ids[cuts[i]:cuts[i + 1]]) for i in range(CHUNKS)])
    return runs.sum(0), [runs[i:i + SPAN].sum(0) for i in range(CHUNKS - SPAN + 1)]


DIGITS = 6  # the content model's fit moves by 1e-5 for a 1e-7 change of its inputs: rounded,
# the features (and the retrained model file) do not move with the block size or summation order


def features(original: str, rewrite: str) -> list[float]:
    """``FEATURES``, in that order, rounded to ``DIGITS``."""
    o_total, o_windows = _windows(original)
    r_total, r_windows = _windows(rewrite)
    uo, ur = _unit(o_total), _unit(r_total)
    vs_original = [float(_unit(w) @ uo) for w in r_windows]
    vs_rest = [float(_unit(w) @ _unit(r_total - w)) for w in r_windows]
    values = [float(uo @ ur), min(vs_original), min(vs_rest),
              min(a + b for a, b in zip(vs_original, vs_rest, strict=True)),
              min(float(_unit(w) @ ur) for w in o_windows)]
    return [round(v, DIGITS) + 0.0 for v in values]
