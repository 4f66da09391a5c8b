"""The `refinery` command: the default job on the bundled input, and `manifest`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.storage import StorageSpec
from tests.releases import verify_release

pytestmark = pytest.mark.slow
REFINERY = str(Path(sys.executable).with_name("refinery"))


def test_default_job_curates_the_bundled_input(stack, tmp_path):
    env = {**os.environ, "REFINERY_HOME": str(tmp_path / "home")}
    run = subprocess.run([REFINERY, "run", "--release", "default-1"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "curating the bundled default input" in run.stderr
    root = tmp_path / "home" / "corpus"
    storage = StorageSpec(str(root)).open()
    manifest = storage.read_json("releases/default-1/manifest.json")
    verify_release(storage, manifest)
    assert set(manifest["sources"]) == {"package_descriptions", "package_licenses"}
    # installed packages share license texts: the default input really has exact duplicates
    assert manifest["dedup"]["exact"]["duplicates"] > 0
    assert "default-1" in run.stdout and "exact dedup" in run.stdout
    # the quality stage ran: every tagger's attributes, only the language rule dropped anything
    q = manifest["quality"]
    assert q["taggers"] == ["lid", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]
    assert list(q["rules"]) == ["language"]
    assert sum(q["histograms"]["quality__lid__score"]["counts"]) == manifest["funnel"][-1]["docs_in"]

    show = subprocess.run([REFINERY, "manifest", str(root)], env=env, capture_output=True, text=True, timeout=120)
    assert show.returncode == 0 and "release   default-1" in show.stdout
    raw = subprocess.run([REFINERY, "manifest", f"{root}/releases/default-1", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert json.loads(raw.stdout)["release"] == "default-1"
    missing = subprocess.run([REFINERY, "manifest", f"{root}/releases/nope"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 1 and "not published" in missing.stderr


def test_bad_config_key_is_named(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("output: /tmp/x\nexact_dedup: {enabeld: true}\n")
    run = subprocess.run([REFINERY, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "exact_dedup.enabeld: unknown key" in run.stderr and str(cfg) in run.stderr
