"""The one way a map step splits its rows into shuffle partitions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def split_by(table: pa.Table, part: np.ndarray) -> dict[int, pa.Table]:
    """Rows of ``table`` grouped by their partition number ``part`` (empty partitions omitted)."""
    if table.num_rows == 0:
        return {}
    order = np.argsort(part, kind="stable")
    sp = part[order]
    table = table.take(pa.array(order))
    bounds = np.flatnonzero(np.diff(sp)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(sp)]])
    return {int(sp[s]): table.slice(s, e - s) for s, e in zip(starts, ends, strict=True)}
