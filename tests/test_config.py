"""The pipeline YAML: validation errors name the bad key; secrets never leave the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasks.config import ConfigError, load_config


def _write(tmp_path, text):
    p = tmp_path / "pipeline.yaml"
    p.write_text(text)
    return p


def test_valid_config_loads_with_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "output: /tmp/out\ninputs:\n  - uri: /data/x.parquet\n    columns: {text: body}\n"))
    assert cfg.inputs[0].columns.text == "body"
    assert cfg.exact_dedup.enabled and cfg.exact_dedup.key == "stripped"
    assert cfg.execution.max_retries == 2


@pytest.mark.parametrize(
    "text, needle",
    [
        ("output: /x\nexact_dedupe: {enabled: true}\n", "exact_dedupe: unknown key"),
        ("inputs:\n  - uri: /x\n    columns: {txt: body}\n", "inputs.0.columns.txt: unknown key"),
        ("execution: {max_retries: -1}\n", "execution.max_retries"),
        ("exact_dedup: {key: fuzzy}\n", "exact_dedup.key"),
        ("release: ../../etc\n", "release"),
        ("inputs:\n  - {uri: /x, source: a/b}\n", "inputs.0.source"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("inputs: [\n", "not valid YAML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and needle in str(exc.value)


def test_secrets_go_to_the_environment_and_nowhere_else(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    cfg = load_config(_write(tmp_path, "storage: {access_key_id: AKIDX123, secret_access_key: s3cr3t-VALUE}\n"))
    assert "s3cr3t-VALUE" not in json.dumps(cfg.public_dict())
    assert "s3cr3t-VALUE" not in repr(cfg)
    clean = cfg.export_secrets_to_env()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-VALUE"
    assert clean.storage.secret_access_key is None and clean.storage.access_key_id is None


def test_cli_prints_the_json_schema_and_validates():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "config", "schema"], capture_output=True, text=True,
                         check=True)
    schema = json.loads(out.stdout)
    assert schema["title"] == "PipelineConfig"
    assert {"inputs", "output", "exact_dedup", "execution"} <= set(schema["properties"])
