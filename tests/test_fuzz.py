"""Coverage-guided fuzzing (atheris) of the parsers that read model output and rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TARGETS = Path(__file__).with_name("fuzz_targets.py")


@pytest.mark.parametrize("target", ["prox", "rules"])
def test_atheris_finds_no_crash(target, tmp_path):
    out = subprocess.run([sys.executable, str(TARGETS), target, "-runs=30000", f"-artifact_prefix={tmp_path}/"],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Done 30000 runs" in out.stderr
