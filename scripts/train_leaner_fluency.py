"""Regenerate tasks/leaner/models/fluency_bigram.json.gz, the word-order model of the leaner
stage's fluency check, from real fluent text in ../shared/data: the Simple English Wikipedia
articles (simple_wikipedia). Counting is deterministic (no sampling), so the same data gives
the same file byte for byte. The TinyHelen sample that calibrates the thresholds is not used.

    python scripts/train_leaner_fluency.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import pyarrow.parquet as pq

    from tasks.leaner.fluency import MODEL_PATH, save, train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    path = args.data / "simple_wikipedia" / "simple_wikipedia.parquet"
    if not path.is_file():
        sys.exit(f"{path}: file not found (pass --data, the folder holding simple_wikipedia/)")
    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    model = train(texts)
    save(model)
    print(f"{len(texts)} documents, {sum(model['unigrams'].values())} tokens, {len(model['bigrams'])} bigrams "
          f"-> {MODEL_PATH} ({MODEL_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
