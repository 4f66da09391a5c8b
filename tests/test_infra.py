"""The checked-in configurations for going past one machine parse and point at real code."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect.client.schemas.objects import ConcurrencyLimitStrategy

REPO = Path(__file__).resolve().parents[1]


def test_prefect_yaml_deployments_reference_real_flows():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {d["entrypoint"].rsplit(":", 1)[1]: d for d in spec["deployments"]}
    assert set(names) == {"curate", "refresh", "backfill"}
    from tasks.config import PipelineConfig

    for flow_name, d in names.items():
        module, func = d["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module), func)
        assert flow.name == flow_name
        cfg = PipelineConfig.model_validate(d["parameters"]["config"])  # the form's defaults are valid
        # named per pipeline, with the pipeline's own tag and work queue (a shared server)
        assert d["name"] == cfg.name == d["work_pool"]["work_queue_name"]
        assert f"pipeline:{cfg.name}" in d["tags"]
        assert d["work_pool"]["name"] == "refinery"
    assert names["refresh"]["schedules"][0]["cron"]
    from flows.backfill import BackfillSpec

    BackfillSpec.model_validate(names["backfill"]["parameters"]["spec"])
    assert names["refresh"]["concurrency_limit"]["collision_strategy"] in ConcurrencyLimitStrategy.__members__


def test_ray_configs_parse_and_install_refinery():
    cluster = yaml.safe_load((REPO / "infra/ray/cluster.yaml").read_text())
    assert cluster["cluster_name"] == "refinery"
    assert any("corpus-refinery" in c for c in cluster["setup_commands"])
    assert any("ray start --head" in c for c in cluster["head_start_ray_commands"])
    kuberay = yaml.safe_load((REPO / "infra/kubernetes/raycluster.yaml").read_text())
    assert kuberay["kind"] == "RayCluster" and kuberay["apiVersion"] == "ray.io/v1"
    import ray

    assert kuberay["spec"]["rayVersion"] == ray.__version__
    containers = [kuberay["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        g["template"]["spec"]["containers"][0] for g in kuberay["spec"]["workerGroupSpecs"]]
    for c in containers:
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["PREFECT_API_URL"].endswith("/api")  # workers report to the shared server


def test_prefect_server_env_uses_postgres():
    env = dict(line.split("=", 1) for line in (REPO / "infra/prefect/server.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
