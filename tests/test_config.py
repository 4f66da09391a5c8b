"""The pipeline YAML: validation errors name the bad key; secrets never leave the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasks.config import ConfigError, load_config, parse_config


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
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):  # set first: monkeypatch then restores "absent"
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    cfg = load_config(_write(tmp_path, "storage: {access_key_id: AKIDX123, secret_access_key: s3cr3t-VALUE}\n"))
    assert "s3cr3t-VALUE" not in json.dumps(cfg.public_dict())
    assert "s3cr3t-VALUE" not in repr(cfg)
    clean = cfg.export_secrets_to_env()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-VALUE"
    assert clean.storage.secret_access_key is None and clean.storage.access_key_id is None


def test_the_run_form_offers_no_storage_keys_but_the_file_schema_does():
    """Prefect builds the UI's run form from the flow's parameter schema and keeps what is typed
    there in clear text in its database: the keys are left out of the form (and a run whose
    parameters still carry them is refused, below), while the pipeline file's schema keeps them."""
    from prefect.utilities.callables import parameter_schema

    from flows.backfill import backfill
    from flows.curate import curate
    from flows.refresh import refresh
    from tasks.config import config_json_schema

    for fl in (curate, refresh, backfill):
        form = parameter_schema(fl).model_dump()["definitions"]["StorageConfig"]
        assert "scratch_compression" in form["properties"] and form.get("additionalProperties") is False
        assert not {"access_key_id", "secret_access_key"} & set(form["properties"])
    file_props = config_json_schema()["$defs"]["StorageConfig"]["properties"]
    assert {"access_key_id", "secret_access_key", "scratch_compression"} <= set(file_props)
    assert file_props["secret_access_key"]["anyOf"][0]["writeOnly"] is True


def test_a_flow_whose_parameters_carry_storage_keys_is_refused_before_any_work(tmp_path, monkeypatch):
    from flows.backfill import BackfillSpec, backfill
    from flows.curate import curate, refuse_parameter_secrets
    from flows.refresh import refresh
    from tasks.errors import ReleaseError

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")  # so that monkeypatch restores "absent" after the export
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    out = tmp_path / "corpus"
    cfg = parse_config({"output": str(out), "inputs": [{"uri": str(tmp_path / "in")}],
                        "storage": {"secret_access_key": "s3cr3t-VALUE"}})
    calls = [lambda: curate.fn(cfg), lambda: refresh.fn(cfg), lambda: backfill.fn(cfg, BackfillSpec(partitions=["x"]))]
    for call in calls:
        with pytest.raises(ReleaseError) as exc:
            call()
        assert str(exc.value).startswith("storage keys came in this flow's config parameter")
        assert "no flow run records them" in str(exc.value) and "s3cr3t" not in str(exc.value)
    assert not out.exists() and "AWS_SECRET_ACCESS_KEY" not in os.environ  # nothing written, nothing exported
    # the CLI's way: keys moved into the environment first, and the same config passes the check
    assert refuse_parameter_secrets(cfg.export_secrets_to_env()) is None


class _FakeClient:
    """The two calls refuse_parameter_secrets makes on Prefect's client, over one stored run."""

    def __init__(self, parameters: dict, fail: bool = False):
        self.parameters, self.fail, self.updates = parameters, fail, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read_flow_run(self, rid):
        from types import SimpleNamespace

        return SimpleNamespace(id=rid, parameters=self.parameters)

    def update_flow_run(self, rid, parameters):
        if self.fail:
            raise ConnectionError("server gone")
        self.updates.append((rid, parameters))
        self.parameters = parameters


@pytest.mark.parametrize("fail", [False, True])
def test_a_served_run_with_keys_has_them_removed_from_its_record(tmp_path, monkeypatch, fail):
    import uuid

    import prefect.client.orchestration as orchestration

    from flows import curate
    from flows.param_secrets import MARKER
    from tasks.errors import ReleaseError

    rid = uuid.uuid4()
    cfg = parse_config({"output": str(tmp_path / "corpus"), "inputs": [{"uri": str(tmp_path / "in")}],
                        "storage": {"access_key_id": "AKIDX", "secret_access_key": "s3cr3t-VALUE", "region": "r1"}})
    stored = {"config": cfg.model_dump(mode="json") | {"storage": {"access_key_id": "AKIDX",
                                                                   "secret_access_key": "s3cr3t-VALUE",
                                                                   "region": "r1"}}}
    client = _FakeClient(stored, fail)
    monkeypatch.setattr(curate.flow_run, "get_id", lambda: rid)
    monkeypatch.setattr(orchestration, "get_client", lambda sync_client=False: client)
    with pytest.raises(ReleaseError) as exc:
        curate.refuse_parameter_secrets(cfg)
    if fail:
        assert client.updates == [] and "could NOT be removed" in str(exc.value) and str(rid) in str(exc.value)
    else:
        assert str(rid) in str(exc.value) and "were removed" in str(exc.value)
        assert client.updates[0][0] == rid
        # the values replaced, not the fields removed: a run swept before its process fetched its
        # parameters still carries "keys" there and is refused, instead of running with serve's keys
        assert client.parameters["config"]["storage"] == {"region": "r1", "access_key_id": MARKER,
                                                          "secret_access_key": MARKER}
        assert parse_config(client.parameters["config"]).has_secrets()
    assert "s3cr3t" not in str(exc.value) and "AKIDX" not in str(exc.value)


class _SweptServer:
    """Prefect's client over a list of stored runs: read_flow_runs pages them by offset (already
    sorted), update_flow_run replaces one run's parameters."""

    def __init__(self, params: list[dict], fail_id: int | None = None):
        from types import SimpleNamespace

        self.fail_id = fail_id
        self.runs = [SimpleNamespace(id=i, parameters=p) for i, p in enumerate(params)]
        self.queries, self.updated = [], []

    def read_flow_runs(self, flow_filter, deployment_filter, sort, limit, offset):
        self.queries.append((sorted(flow_filter.name.any_), deployment_filter.name.any_, sort.value, limit, offset))
        return self.runs[offset:offset + limit]

    def update_flow_run(self, rid, parameters):
        if rid == self.fail_id:
            raise RuntimeError("deleted meanwhile")
        self.updated.append(rid)
        self.runs[rid].parameters = parameters


def test_serve_sweeps_keys_out_of_its_pipelines_runs_only_where_they_are_held():
    from flows.param_secrets import MARKER, sweep

    def params(**storage):
        return {"config": {"name": "wiki", "storage": {"region": None, **storage}}}

    held = params(access_key_id="AKIDX", secret_access_key="s3cr3t")
    stored = [params(), params(access_key_id=None, secret_access_key=None),  # the old form's defaults: not keys
              held, held, params(secret_access_key=MARKER), {"spec": {}}, params(secret_access_key="")]
    stored += [held] * 400
    server = _SweptServer(stored, fail_id=3)
    assert sweep("wiki", newest=None, client=server) == 401  # all pages; 402 held keys, run 3 failed
    assert [q[4] for q in server.queries] == [0, 200, 400] and {q[3] for q in server.queries} == {200}
    assert server.queries[0][:3] == (["backfill", "curate", "refresh"], ["wiki"], "EXPECTED_START_TIME_DESC")
    assert 3 not in server.updated and 2 in server.updated and not {0, 1, 4, 5, 6} & set(server.updated)
    assert server.runs[2].parameters["config"]["storage"] == {"region": None, "access_key_id": MARKER,
                                                              "secret_access_key": MARKER}
    assert server.runs[1].parameters == params(access_key_id=None, secret_access_key=None)
    again = _SweptServer([r.parameters for r in server.runs])
    assert sweep("wiki", newest=200, client=again) == 1 and len(again.queries) == 1  # one page: only run 3 left


def test_prefect_does_not_log_the_parameters_of_a_run_that_fails_validation():
    """Prefect logs the whole parameters of a run whose parameters fail its validation (a served
    run streams that into `refinery serve`'s output); Refinery's filter keeps the first line only."""
    import logging

    from prefect.exceptions import ParameterTypeError

    from flows.curate import curate

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("prefect.flows")
    logger.addHandler(handler)
    try:
        with pytest.raises(ParameterTypeError):
            curate.validate_parameters({"config": {"release": "../up", "storage": {"secret_access_key": "s3cr3t-V"}}})
    finally:
        logger.removeHandler(handler)
    text = "\n".join(r.getMessage() for r in records)
    assert "Parameter validation failed for flow 'curate'" in text and "parameters not logged" in text
    assert "s3cr3t" not in text


def test_served_deployments_defaults_pass_their_own_form_schema(tmp_path, monkeypatch):
    """The server checks a deployment's runs against its parameter schema, which has no key
    fields: defaults that still named them (even as null) made every run from the form fail."""
    from prefect.utilities.schema_tools import validate

    from flows.deployments import build_deployments

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    cfg = parse_config({"name": "wiki", "output": str(tmp_path / "corpus"), "inputs": [{"uri": str(tmp_path)}],
                        "storage": {"secret_access_key": "s3cr3t-VALUE"}}).export_secrets_to_env()
    deployments = build_deployments(cfg)
    assert len(deployments) == 3
    for dep in deployments:
        assert validate(dep.parameters, dep._parameter_openapi_schema.model_dump(), raise_on_error=False) == []
        assert "s3cr3t" not in json.dumps(dep.parameters)
        assert not {"access_key_id", "secret_access_key"} & set(dep.parameters["config"]["storage"])


def test_cli_prints_the_json_schema_and_validates():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "config", "schema"], capture_output=True, text=True,
                         check=True)
    schema = json.loads(out.stdout)
    assert schema["title"] == "PipelineConfig"
    assert {"inputs", "output", "exact_dedup", "execution"} <= set(schema["properties"])
