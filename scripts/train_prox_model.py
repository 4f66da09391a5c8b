#!/usr/bin/env python3
"""Regenerate the learned ProX writer's default model, shipped in the package:
tasks/prox/models/model.json.gz and its model_card.json.

Trained on the two shared labelled sets (../shared/data/web_pages_readability and
../shared/data/web_pages_scrapinghub) with the default TrainParams (seed 0). LightGBM runs on
one thread with deterministic=True and the file is gzip without a timestamp, so a rerun on
the same data gives the same model bytes (the card's `created` time differs).

    python scripts/train_prox_model.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.prox.training import CARD_FILE, SHARED, TrainParams, train_to_storage  # noqa: E402


def main() -> None:
    out = REPO / "tasks" / "prox" / "models"
    card = train_to_storage(None, str(out), TrainParams(), name="prox-learned-default")
    # the card ships with the package: name the shared sets, not this machine's paths
    text = (out / CARD_FILE).read_text().replace(str(SHARED), "../shared/data").replace(str(out), "tasks/prox/models")
    (out / CARD_FILE).write_text(json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n")
    print(f"{card['model']}: sha256 {card['model_sha256']}; held-out sites: {card['validation']}")


if __name__ == "__main__":
    main()
