"""The PII step called as a plain function (no Prefect, no Ray) on real web text."""

from __future__ import annotations

import pyarrow as pa

from tasks import layout
from tasks.pii.core import scan
from tasks.pii.declare import pii_step
from tests.builders import ingest_one, pipeline_config, run_context, shared_input

CC = "cc_web_samples/cc_web_samples.parquet"


def test_pii_step_writes_only_redacted_text_everywhere(tmp_path):
    """Web pages hold e-mail addresses and phone numbers; after the redacting step nothing it
    wrote (documents, rejects) holds one, and it writes no earlier text under changes/."""
    cfg = pipeline_config(tmp_path / "corpus", shared_input(CC, "cc", id="id", metadata="none"),
                          stages=["ingest", "pii"], pii={"enabled": True, "mode": "redact"})
    ctx = run_context(cfg)
    shard, _ = ingest_one(ctx)
    storage = ctx.storage.open()
    before = storage.read_parquet(layout.work_path(ctx.release, "ingest", shard.name))
    found_before = sum(a != b for a, b in zip(before.column("text").to_pylist(),
                                              scan(before, cfg.pii).new_text.to_pylist(), strict=True))
    assert found_before > 0, "the web sample was expected to hold personal data"

    marker = pii_step(ctx, shard.name, "ingest", True)
    written = [f["path"] for f in marker["files"]]
    assert not any("/changes/" in p for p in written)
    tables = [storage.read_parquet(f["path"]) for f in marker["documents"]]
    tables += [storage.read_parquet(p) for p in written if "/rejects/pii/" in p]
    out = pa.concat_tables(t.select(["id", "text"]) for t in tables)
    assert out.num_rows == before.num_rows
    rescanned = scan(out, cfg.pii)
    assert out.column("text").to_pylist() == rescanned.new_text.to_pylist()  # nothing left to redact
    assert marker["pii"]["docs_redacted"] == found_before
