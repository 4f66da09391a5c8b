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


# The input with which atheris found an integer literal beyond 64 bits escaping the rule
# compiler as OverflowError instead of a RuleError (fixed; see RELIABILITY.md).
OVERFLOW_RULE_CRASH = bytes.fromhex("fdb1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1372b2bf9")


@pytest.mark.parametrize("target", ["prox", "rules"])
def test_the_found_crash_input_stays_fixed(target, tmp_path):
    """The crash input atheris once found, replayed through both targets by atheris itself."""
    crash = tmp_path / "crash-overflow"
    crash.write_bytes(OVERFLOW_RULE_CRASH)
    out = subprocess.run([sys.executable, str(TARGETS), target, str(crash)],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Executed" in out.stderr and str(crash) in out.stderr
