"""Ingest of a small local input as one task run per worker per phase (tasks/grouping.py):
the groups, a bad file inside a group, and the real flow on Ray and a real Prefect server
recording exactly the task runs the manifest names, with the release an ungrouped run makes."""

from __future__ import annotations

import collections
import pickle
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks import grouping
from tasks.config import InputSpec, PipelineConfig
from tasks.ingest import plan_shards
from tasks.parallel import GroupInputError, run_group
from tasks.steps import id_check_needed, ingest_read_step
from tests.builders import pipeline_config, run_context
from tests.conftest import shared

SIZES = (60, 15, 15, 80, 30, 40)  # documents per file: unequal, so the byte balance is tested


def _files(folder: Path, repeat: int = 20) -> Path:
    """Files of real web pages with their ids; the second file repeats ``repeat`` ids of the first."""
    src = pq.read_table(shared("cc_web_samples/cc_web_samples.parquet"), columns=["text", "id"])
    folder.mkdir(parents=True)
    start = 0
    for i, n in enumerate(SIZES):
        if i == 1:
            start -= repeat
        pq.write_table(src.slice(start, n), folder / f"part-{i}.parquet")
        start += n
    assert start <= src.num_rows
    return folder


def _input(folder: Path) -> InputSpec:
    return InputSpec(uri=str(folder), source="cc", columns={"text": "text", "id": "id"})


def test_a_small_local_input_is_cut_into_consecutive_groups_of_about_equal_bytes(tmp_path):
    cfg = pipeline_config(tmp_path / "out", _input(_files(tmp_path / "in")))
    shards = plan_shards(cfg)
    assert len(shards) == len(SIZES)
    sizes = [(tmp_path / "in" / f"part-{i}.parquet").stat().st_size for i in range(len(SIZES))]
    assert grouping.shard_bytes(shards) == sizes
    groups = grouping.small_input_groups(shards, 2)
    assert [i for g in groups for i in g] == list(range(len(shards)))  # every shard once, in order
    assert len(groups) == 2
    sums = [sum(sizes[i] for i in g) for g in groups]
    # no cut point would be better balanced than the one chosen
    best = min(abs(sum(sizes[:k]) - sum(sizes[k:])) for k in range(1, len(sizes)))
    assert abs(sums[0] - sums[1]) == best
    assert len(grouping.small_input_groups(shards, 4)) == 4
    # one task per shard: as many workers as shards, a large input, or an input not on local disk
    assert grouping.small_input_groups(shards, len(shards)) is None
    assert grouping.small_input_groups(shards, 1) == [list(range(len(shards)))]
    remote = [replace(s, uri="s3://bucket/" + Path(s.uri).name) for s in shards]
    assert grouping.small_input_groups(remote, 2) is None


def test_the_byte_limit_keeps_large_inputs_one_task_per_shard(tmp_path, monkeypatch):
    cfg = pipeline_config(tmp_path / "out", _input(_files(tmp_path / "in")))
    shards = plan_shards(cfg)
    total = sum(grouping.shard_bytes(shards))
    monkeypatch.setattr(grouping, "SMALL_INPUT_BYTES", total)
    assert grouping.small_input_groups(shards, 2) is not None
    monkeypatch.setattr(grouping, "SMALL_INPUT_BYTES", total - 1)
    assert grouping.small_input_groups(shards, 2) is None


def test_a_bad_file_in_a_group_fails_alone_and_the_others_match_their_own_runs(tmp_path):
    folder = _files(tmp_path / "in")
    (folder / "part-2.parquet").write_bytes(b"PAR1 this is not a parquet file")
    cfg = pipeline_config(tmp_path / "out", _input(folder))
    shards = plan_shards(cfg)
    assert id_check_needed(shards)
    with pytest.raises(GroupInputError, match="1 of 6 shards had bad input; shard 00002: .*part-2.parquet") as err:
        run_group(ingest_read_step, [(s.name, (run_context(cfg), s)) for s in shards])
    # it crosses Ray and Prefect pickled, with every shard's outcome
    out = pickle.loads(pickle.dumps(err.value)).outcome
    assert set(out["failures"]) == {shards[2].name}
    assert "part-2.parquet" in out["failures"][shards[2].name]
    assert set(out["results"]) == {s.name for s in shards} - {shards[2].name}
    # each shard's marker is what the step alone makes (run apart, into another root)
    alone_cfg = pipeline_config(tmp_path / "alone", _input(folder))
    for s in shards:
        if s.name in out["results"]:
            alone = ingest_read_step(run_context(alone_cfg), s)
            assert alone["stats"] == out["results"][s.name]["stats"]
            assert not out["results"][s.name]["skipped"]
    # a group run again (its retry) skips every shard already done
    with pytest.raises(GroupInputError) as err:
        run_group(ingest_read_step, [(s.name, (run_context(cfg), s)) for s in shards])
    again = err.value.outcome
    assert all(m["skipped"] for m in again["results"].values()) and set(again["failures"]) == {shards[2].name}
    good = [s for s in shards if s.name != shards[2].name]
    assert run_group(ingest_read_step, [(s.name, (run_context(cfg), s)) for s in good])["failures"] == {}


@pytest.mark.slow
def test_grouped_steps_on_ray_record_their_task_runs_and_publish_the_ungrouped_release(
        stack, ray_local, tmp_path, monkeypatch):
    from flows.curate import run_curate
    from tasks.storage import StorageSpec
    from tests.releases import expected_task_runs, prefect_runs, verify_release

    folder = _files(tmp_path / "in")
    (folder / "part-5.parquet").write_bytes(b"not parquet at all")  # a bad file inside the second group
    near = {"enabled": True}
    manifests = {}
    for name, limit in (("grouped", grouping.SMALL_INPUT_BYTES), ("per-shard", 0)):
        monkeypatch.setattr(grouping, "SMALL_INPUT_BYTES", limit)
        cfg = PipelineConfig(release="groups", output=str(tmp_path / name), inputs=[_input(folder)],
                             near_dedup=near)
        m = run_curate(cfg)
        verify_release(StorageSpec(cfg.output).open(), m)
        flow_run, task_runs = prefect_runs(m["flow_run_id"])
        assert flow_run["state"]["type"] == "COMPLETED"
        by_step = collections.Counter(t["name"].rsplit("-", 1)[0] for t in task_runs)
        assert by_step == expected_task_runs(m, len(SIZES), failed=1)
        # the bad file fails the one task run that read it, its group's when grouped
        failed_runs = sorted(t["name"] for t in task_runs if t["state"]["type"] != "COMPLETED")
        if name == "grouped":
            (last,) = [g for g in grouping.small_input_groups(plan_shards(cfg), 2) if 5 in g]
            assert last[-1] == 5 and len(last) > 1
            assert failed_runs == [f"ingest_read-{last[0]:05d}..00005"]
        else:
            assert failed_runs == ["ingest_read-00005"]
        manifests[name] = (m, by_step)
    grouped, per_shard = manifests["grouped"], manifests["per-shard"]
    buckets = grouped[0]["dedup"]["source_ids"]["buckets"]
    assert grouped[0]["task_groups"] == {"ingest_read": 2, "ingest_ids": min(2, buckets), "ingest": 2,
                                         "near_dedup": 2}
    assert grouped[1]["ingest_read"] == grouped[1]["ingest"] == grouped[1]["near_dedup"] == 2
    assert "task_groups" not in per_shard[0]
    assert per_shard[1]["ingest_read"] == len(SIZES)
    assert per_shard[1]["ingest"] == per_shard[1]["near_dedup"] == len(SIZES) - 1
    # the same release either way: documents, rejects (the 20 repeated ids among them), failures
    for key in ("totals", "funnel", "sources"):
        assert grouped[0][key] == per_shard[0][key], key
    assert grouped[0]["dedup"]["source_ids"]["duplicates"] == 20
    assert [f["shard"] for f in grouped[0]["failures"]] == [f["shard"] for f in per_shard[0]["failures"]] == ["00005"]
    assert grouped[0]["dedup"]["near"]["duplicates"] == per_shard[0]["dedup"]["near"]["duplicates"]


def test_expected_task_runs_take_a_grouped_steps_count_from_the_manifest():
    from tasks import registry

    manifest = {"stages": ["ingest", "near_dedup"],
                "dedup": {"source_ids": {"buckets": 4},
                          "near": {"partitions": 8, "components": "single_task", "cc_rounds": 0}}}
    plain = registry.expected_task_runs(manifest, 16)
    assert plain == {"ingest_read": 16, "ingest_ids": 4, "ingest": 16, "near_dedup": 16, "near_dedup_global": 1}
    grouped = registry.expected_task_runs({**manifest, "task_groups": {"ingest_read": 2, "ingest_ids": 2,
                                                                        "ingest": 2, "near_dedup": 2}}, 16)
    assert grouped == {"ingest_read": 2, "ingest_ids": 2, "ingest": 2, "near_dedup": 2, "near_dedup_global": 1}


def test_a_failure_other_than_bad_input_stops_the_group_and_names_its_shard(tmp_path):
    cfg = pipeline_config(tmp_path / "out", _input(_files(tmp_path / "in")))
    shards = plan_shards(cfg)
    seen = []

    def step(ctx, shard):
        seen.append(shard.name)
        if shard.name == shards[1].name:
            raise OSError("disk full")
        return ingest_read_step(ctx, shard)

    with pytest.raises(OSError, match="disk full") as err:
        run_group(step, [(s.name, (run_context(cfg), s)) for s in shards])
    assert seen == [shards[0].name, shards[1].name]  # the group stops: its retry goes on from there
    # the note crosses Ray pickled and names the shard and its group
    notes = pickle.loads(pickle.dumps(err.value)).__notes__
    assert notes == [f"in shard {shards[1].name} of the group {shards[0].name}..{shards[-1].name}"]
