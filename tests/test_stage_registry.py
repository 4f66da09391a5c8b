"""The stage registry and the pipeline's `stages:` (no Prefect, no Ray)."""

from __future__ import annotations

import pytest

from tasks import registry
from tasks.config import ConfigError, PipelineConfig, load_config


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_the_default_order_is_todays_order_of_the_enabled_stages():
    assert [s.name for s in registry.order(PipelineConfig())] == ["ingest", "exact_dedup", "near_dedup"]
    cfg = PipelineConfig(quality={"enabled": True, "thresholds": [
        {"name": "top", "attribute": "quality__combined__score", "keep_top_percent": 50}]},
        prox={"enabled": True, "writer": "heuristic"}, exact_dedup={"enabled": False})
    assert [s.name for s in registry.order(cfg)] == ["ingest", "near_dedup", "quality", "prox"]
    # one funnel line per map step, the thresholds' pass included; the progress waves add up
    assert registry.expected_steps(cfg) == ["ingest", "near_dedup", "quality", "quality_threshold", "prox"]
    assert registry.total_waves(cfg) == 1 + 5 + 3 + 1


def test_web_inputs_bring_the_extract_stage_and_hygiene_stages_run_when_configured():
    web = PipelineConfig(inputs=[{"uri": "crawl/part-0.warc.gz"}, {"uri": "pages.parquet", "columns": {"html": "h"}}])
    assert [s.name for s in registry.order(web)] == ["ingest", "extract", "exact_dedup", "near_dedup"]
    assert [s.name for s in registry.order(PipelineConfig(inputs=[{"uri": "t.jsonl"}]))][:2] == ["ingest", "exact_dedup"]
    hygiene = PipelineConfig(pii={"enabled": True}, decontaminate={"eval_sets": [
        {"name": "humaneval", "url": "he.jsonl", "columns": ["prompt"]}]})
    assert [s.name for s in registry.order(hygiene)] == ["ingest", "exact_dedup", "near_dedup", "decontaminate", "pii"]
    # ProX's learned writer after extraction uses the line model trained on extracted text
    from tasks.prox.after_extract import AFTER_EXTRACT_MODEL
    from tasks.prox.stage import learned_model_url

    assert learned_model_url(web.model_copy(update={"prox": web.prox.model_copy(update={"enabled": True})})) == str(
        AFTER_EXTRACT_MODEL)
    assert learned_model_url(PipelineConfig(prox={"enabled": True})) is None  # the shipped default
    assert learned_model_url(PipelineConfig(prox={"enabled": True, "model": "m.json.gz"})) == "m.json.gz"
    # exact dedup hashes what the stage before it hands on, so it may follow any map stage
    late = PipelineConfig(stages=["ingest", "prox", "exact_dedup", "near_dedup"])
    assert [s.name for s in registry.order(late)] == late.stages
    plain = PipelineConfig(inputs=[{"uri": "t.jsonl"}]).public_dict()  # sections at their defaults: not recorded
    assert not {"extract", "decontaminate", "pii", "tokenizer"} & set(plain) and "html" not in plain["inputs"][0]["columns"]
    # fields added later are recorded only when set away from their defaults
    assert {"evaluate", "engine"}.isdisjoint(plain["quality"]) and "content_check" not in plain["leaner"]
    floors = PipelineConfig(inputs=[{"uri": "t.jsonl"}], leaner={"content_check": "floors"}).public_dict()
    assert floors["leaner"]["content_check"] == "floors"


def test_a_listed_stage_runs_and_an_unlisted_one_does_not():
    cfg = PipelineConfig(stages=["ingest", "exact_dedup", "prox", "near_dedup", "quality"])
    assert cfg.prox.enabled and cfg.quality.enabled and not cfg.leaner.enabled
    assert [s.name for s in registry.order(cfg)] == cfg.stages
    only = PipelineConfig(stages=["ingest", "quality"])
    assert not only.exact_dedup.enabled and not only.near_dedup.enabled
    # the config round-trips (the CLI and Prefect validate it again)
    assert PipelineConfig.model_validate(only.model_dump()).stages == ["ingest", "quality"]


@pytest.mark.parametrize(("stages", "conflict"), [
    ("[exact_dedup, ingest]", "ingest must come first"),
    ("[ingest, exact_dedup, extract]", "extract must come right after ingest (it turns the HTML ingest read into "
                                       "the text every later stage reads); it comes after exact_dedup"),
    ("[ingest, near_dedup, near_dedup]", "stage 'near_dedup' is listed twice"),
    ("[ingest, dedupe]", "unknown stage 'dedupe' (known: ingest, extract, exact_dedup, near_dedup, decontaminate, "
                         "quality, prox, leaner, pii)"),
    ("[]", "ingest must come first"),
])
def test_an_order_that_cannot_run_is_refused_naming_the_conflict(tmp_path, stages, conflict):
    message = _error(tmp_path, f"stages: {stages}\n")
    assert f"stages: {conflict}" in message


def test_a_section_that_contradicts_stages_is_refused(tmp_path):
    message = _error(tmp_path, "stages: [ingest, prox]\nprox: {enabled: false}\n")
    assert "prox.enabled is false but stages lists prox" in message
    message = _error(tmp_path, "stages: [ingest]\nquality: {enabled: true}\n")
    assert "quality.enabled is true but stages leaves out quality" in message


def test_thresholds_need_the_quality_stage(tmp_path):
    message = _error(tmp_path, "stages: [ingest, exact_dedup]\nquality:\n  thresholds:\n"
                               "    - {name: top, attribute: quality__combined__score, keep_top_percent: 50}\n")
    assert "quality.thresholds need the quality stage" in message


def test_a_config_without_stages_keeps_its_checksum():
    """A release started before `stages` existed resumes: an empty `stages` is not recorded."""
    assert "stages" not in PipelineConfig().public_dict()
    assert PipelineConfig(stages=["ingest"]).public_dict()["stages"] == ["ingest"]


def test_the_prefect_form_offers_the_stage_order():
    """The curate flow's parameter is the pipeline config: the UI form has `stages`."""
    from flows.curate import curate

    schema = curate.parameters.model_dump()
    pipeline = schema["definitions"]["PipelineConfig"]["properties"]
    assert pipeline["stages"]["title"] == "Stage order"
    assert "ingest first" in pipeline["stages"]["description"]


def test_a_registered_stage_can_be_ordered_and_unregistered():
    from tests.e2e import toy_stage

    registry.register(toy_stage.STAGE)
    try:
        cfg = PipelineConfig(stages=["ingest", toy_stage.NAME, "near_dedup"])
        assert [s.name for s in registry.order(cfg)] == ["ingest", toy_stage.NAME, "near_dedup"]
        assert toy_stage.NAME not in [s.name for s in registry.order(PipelineConfig())]  # only when listed
        with pytest.raises(ValueError, match="already registered"):
            registry.register(toy_stage.STAGE.__class__(**{**toy_stage.STAGE.__dict__}))
    finally:
        registry.unregister(toy_stage.NAME)
    with pytest.raises(ValueError, match="unknown stage 'toy_short'"):
        PipelineConfig(stages=["ingest", toy_stage.NAME])
