"""The combined quality score (``quality__combined__score``): measured against human labels
on documents it was not fitted on, shipped reproducibly, evaluated and
retrained from the command line, and drawn in the report. What the stage step writes is tested in tests/unit/test_quality_step.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.quality import features, scorer, stage
from tasks.quality.classifier import auc
from tasks.quality.labels import LabelError, read_labels
from tasks.quality.training import scorer_features
from tests.builders import ingest_one, pipeline_config, run_context, shared_input
from tests.conftest import REPO, shared

DEV = "dclm_human_quality_dev/dclm_human_quality_dev.parquet"
SHIPPED = scorer.DEFAULT_DIR


def _cli(*args: str):
    """The command line, in process (the exit code, stdout and stderr of a real invocation)."""
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def dev():
    data = read_labels([f"{shared(DEV)}#text,label"])
    x = scorer_features(data.texts, SHIPPED / scorer.CLASSIFIER_FILE)
    return data, x


def test_cross_validated_auc_on_human_labels_beats_length_on_the_same_folds(dev):
    """Refitted on 4/5 of the labelled documents, scored on the 5th, 5 folds × 10 repeats: the
    score ranks the held-out documents clearly better than their length does, fold by fold."""
    data, x = dev
    y = data.labels
    length = x[:, list(features.FEATURES).index("log_words")]
    cv = scorer.cross_validate(x, y, length, repeats=10, bootstrap=500)
    print(json.dumps({k: cv[k] for k in ("auc_mean", "auc_fold_interval_95", "oof_auc", "oof_auc_ci_95",
                                         "baseline_auc_mean", "beats_baseline_share", "first_repeat")}))
    assert cv["auc_mean"] >= 0.70
    assert cv["oof_auc_ci_95"][0] > 0.6  # the bootstrap interval of the out-of-fold AUC stays clear of chance
    assert cv["auc_mean"] >= cv["baseline_auc_mean"] + 0.08
    assert cv["beats_baseline_share"] >= 0.85
    # plain 5-fold cross-validation (the first repeat): the score beats length on every fold
    assert all(f["auc"] > f["baseline_auc"] for f in cv["first_repeat"]), cv["first_repeat"]
    # the article classifier never saw a human label: its AUC here is out of sample as it stands
    assert auc(x[:, 0], y) >= 0.68


def test_equal_weights_rank_held_out_documents_better_than_fitted_ones(dev):
    """Why the shipped score does not fit its weights: on the same folds, the fitted logistic
    regression (`--method logistic`, all six inputs) ranks the held-out documents worse and beats
    length on fewer folds than the equal weights; both stay well above length alone."""
    data, x = dev
    length = x[:, list(features.FEATURES).index("log_words")]
    equal = scorer.cross_validate(x, data.labels, length, repeats=10, bootstrap=100, method="equal")
    fitted = scorer.cross_validate(x, data.labels, length, repeats=10, bootstrap=100, method="logistic")
    print({"equal": equal["auc_mean"], "logistic": fitted["auc_mean"], "length": equal["baseline_auc_mean"],
           "beats length": (equal["beats_baseline_share"], fitted["beats_baseline_share"])})
    assert equal["method"] == "equal" and fitted["method"] == "logistic" and fitted["C"] == scorer.DEFAULT_C
    assert equal["fold_aucs"] != fitted["fold_aucs"]
    assert equal["beats_baseline_share"] > fitted["beats_baseline_share"]
    assert min(equal["auc_mean"], fitted["auc_mean"]) >= equal["baseline_auc_mean"] + 0.1


def test_a_score_without_signal_fails_the_same_bar(dev):
    """The bar above is not met by a model of the same form over uninformative inputs."""
    data, x = dev
    rng = np.random.default_rng(0)
    noise = rng.normal(size=x.shape)
    cv = scorer.cross_validate(noise, data.labels, x[:, 1], repeats=10, bootstrap=100)
    assert cv["auc_mean"] < 0.6 and cv["beats_baseline_share"] < 0.5


def test_shipped_model_is_monotone_small_and_matches_its_card():
    spec = json.loads((SHIPPED / scorer.SCORER_FILE).read_text())
    card = json.loads((SHIPPED / scorer.CARD_FILE).read_text())
    assert spec["features"] == list(features.FEATURES)
    assert spec["method"] == "equal"
    weights = dict(zip(spec["features"], spec["coef"], strict=True))
    for name, weight in weights.items():
        # every input it uses moves the score the way it was declared to, all by the same amount
        if name in scorer.EQUAL_INPUTS:
            assert np.sign(weight) == features.FEATURES[name][0], name
            assert abs(weight) == abs(weights[scorer.EQUAL_INPUTS[0]]) > 0, name
        else:
            assert weight == 0, name
    clf = SHIPPED / scorer.CLASSIFIER_FILE
    assert spec["classifier_sha256"] == card["classifier_sha256"] == hashlib.sha256(clf.read_bytes()).hexdigest()
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 3 * 2**20
    cv = card["cross_validation"]
    assert cv["folds"] * cv["repeats"] == len(cv["fold_aucs"]) == 100 and cv["auc_mean"] >= 0.70
    assert set(card["signal_auc"]) == set(features.FEATURES)
    assert card["labels"]["documents"] == 218 and "MIT" in card["labels"]["license"]
    assert set(card["article_classifier"]["licenses"]) == {"web_pages_scrapinghub", "web_pages_readability"}


def test_the_script_rebuilds_the_shipped_model_byte_for_byte(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train_quality_scorer.py"), "--shared",
                          str(shared(DEV).parents[1]), "--output", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    for name in (scorer.CLASSIFIER_FILE, scorer.SCORER_FILE, scorer.CARD_FILE):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def _ingest_and_quality(tmp_path: Path, quality: dict) -> tuple[dict, pa.Table, pa.Table]:
    """The ingest and quality shard steps, called directly (no Prefect, no Ray) on cc_web_samples."""
    from tasks.quality.steps import quality_step

    cfg = pipeline_config(tmp_path / "corpus",
                          shared_input("cc_web_samples/cc_web_samples.parquet", "cc", id="id", metadata=["collection"]),
                          exact_dedup={"enabled": False}, near_dedup={"enabled": False}, quality=quality)
    ctx = run_context(cfg)
    shard, _ = ingest_one(ctx)
    result = quality_step(ctx, shard.name, "ingest", False)
    storage = ctx.storage.open()
    attrs = pa.concat_tables([storage.read_parquet(f["path"]) for f in result["files"]
                              if "/attributes/quality/" in f["path"]])
    docs = pq.read_table(shared("cc_web_samples/cc_web_samples.parquet"), columns=["id", "collection"])
    return result, attrs, docs


def test_eval_cli_on_the_dev_set(dev, tmp_path):
    data, x = dev
    out_json = tmp_path / "eval.json"
    run = _cli("quality", "eval", "--labels", f"{shared(DEV)}#text,label", "--output", str(out_json))
    assert run.exit_code == 0, run.stderr
    result = json.loads(out_json.read_text())
    assert "quality__combined__score: AUC" in run.stdout
    # the shipped score, recomputed here from its features, has the AUC the command reports
    shipped = scorer.load_scorer()
    assert result["auc"] == round(auc(shipped.predict(x), data.labels), 4)
    # every quality attribute that is a document score has its own row, and so has each input
    expected = {"quality__lid__score", "quality__gopher_repetition__pass", "quality__gopher_quality__pass",
                "quality__c4_quality__pass", "quality__c4_quality__removed_fraction", "quality__fineweb_quality__pass",
                stage.COMBINED} | {f"combined input: {f}" for f in features.FEATURES}
    assert set(result["signals"]) == expected
    assert all(s["documents"] == 218 for s in result["signals"].values())
    assert result["signals"]["combined input: log_words"]["auc"] == round(auc(x[:, 1], data.labels), 4)
    # precision and recall at each cut-off follow from the scores and labels
    scores = shipped.predict(x)
    for cut in result["cutoffs"]:
        kept = scores >= cut["value"]
        assert cut["kept"] == int(kept.sum())
        assert cut["precision"] == round(data.labels[kept].mean(), 4)
        assert cut["recall"] == round(kept[data.labels == 1].mean(), 4)
    assert [c["name"] for c in result["cutoffs"]] == ["0.5", "top-50%"]


def test_eval_uses_the_configs_cutoffs_and_another_attribute(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("quality:\n  enabled: true\n  thresholds:\n"
                   "    - {name: top-lid, attribute: quality__lid__score, keep_top_percent: 40}\n")
    run = _cli("quality", "eval", "--labels", f"{shared(DEV)}#text,label", "--attribute", "quality__lid__score",
               "--config", str(cfg), "--output", str(tmp_path / "e.json"))
    assert run.exit_code == 0, run.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert [c["name"] for c in result["cutoffs"]] == ["top-lid", "language"]
    top = result["cutoffs"][0]
    assert 0.4 * 218 <= top["kept"] <= 0.5 * 218
    assert result["cutoffs"][1]["value"] == 0.65
    run = _cli("quality", "eval", "--labels", f"{shared(DEV)}#text,label", "--attribute", "quality__lid__lang",
               "--output", str(tmp_path / "e.json"))
    assert run.exit_code == 1 and "'quality__lid__lang' is not a numeric quality attribute" in run.stderr


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _dev_rows(n: int = 40) -> list[dict]:
    t = pq.read_table(shared(DEV), columns=["text", "label"]).slice(0, n)
    return t.to_pylist()


@pytest.mark.parametrize(("extra", "problem", "skipped"), [
    ({"text": "A document without a label."}, "line 41: missing label 'label'", "missing label"),
    ({"text": "Scored two out of five.", "label": 2}, "line 41: label 2 is not binary", "label not binary"),
    ({"text": "Labelled as good.", "label": "good"}, "line 41: label 'good' is not binary", "label not binary"),
    ({"text": "  \n ", "label": 1}, "line 41: empty text", "empty text"),
    ({"label": 1}, "line 41: missing text", "missing text"),
])
def test_bad_label_rows_name_the_file_and_row_or_are_counted_and_skipped(tmp_path, extra, problem, skipped):
    path = _write_jsonl(tmp_path / "labels.jsonl", [*_dev_rows(), extra])
    with pytest.raises(LabelError) as err:
        read_labels([path])
    assert str(err.value).startswith(f"{path}: {problem}")
    data = read_labels([path], skip_bad_rows=True)
    assert data.skipped == {skipped: 1} and len(data.texts) == 40


def test_bad_label_files_fail_with_one_line(tmp_path):
    single = _write_jsonl(tmp_path / "single.jsonl", [r for r in _dev_rows(60) if r["label"] == 1])
    pq.write_table(pa.table({"text": ["a b c", "d e f"], "quality": [1, 0]}), tmp_path / "nolabel.parquet")
    cases = {
        single: "a single class (every label is 1)",
        f"{tmp_path / 'nolabel.parquet'}#text,label": "no label column 'label' (columns: text, quality)",
        str(tmp_path / "missing.jsonl"): "input not found",
        f"{shared(DEV)}#body,label": "no text column 'body'",
    }
    for spec, problem in cases.items():
        run = _cli("quality", "eval", "--labels", spec, "--output", str(tmp_path / "x.json"))
        assert run.exit_code == 1
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and problem in lines[0] and spec.split("#")[0] in lines[0], run.stderr
    # with --skip-bad-rows a file whose rows are all bad is still an error, naming what was skipped
    bad = _write_jsonl(tmp_path / "allbad.jsonl", [{"text": "x", "label": 3}, {"text": "y"}])
    run = _cli("quality", "eval", "--labels", bad, "--skip-bad-rows", "--output", str(tmp_path / "x.json"))
    assert run.exit_code == 1 and "no usable labelled rows" in run.stderr and "label not binary" in run.stderr


def test_train_cli_refits_the_combined_score_from_labels(dev, tmp_path):
    """`refinery quality train --labels` on the same labels reproduces the shipped weights, and
    the stage scores with the model it wrote."""
    data, x = dev
    rows = pq.read_table(shared(DEV), columns=["text", "label"]).to_pylist()
    path = _write_jsonl(tmp_path / "labels.jsonl", [*rows, {"text": "no label here"}])
    run = _cli("quality", "train", "--labels", f"{path}#text,label", "--skip-bad-rows", "--output",
               str(tmp_path / "model"))
    assert run.exit_code == 0, run.stderr
    assert "cross-validated AUC" in run.stdout
    card = json.loads((tmp_path / "model" / scorer.CARD_FILE).read_text())
    assert card["labels"]["skipped_rows"] == {"missing label": 1} and card["labels"]["documents"] == 218
    trained = json.loads((tmp_path / "model" / scorer.SCORER_FILE).read_text())
    shipped = json.loads((SHIPPED / scorer.SCORER_FILE).read_text())
    assert np.allclose(trained["coef"], shipped["coef"], atol=1e-6)
    model = scorer.load_scorer(str(tmp_path / "model"))
    assert np.allclose(model.predict(x), scorer.load_scorer().predict(x))


def test_report_draws_the_score_histogram_with_its_cutoffs(tmp_path):
    """The quality figures a release publishes, from the shard steps' results, drawn as the
    report draws them: the score's histogram and a line at each cut-off that uses it."""
    from tasks.config import QualityConfig
    from tasks.publish import quality_figures
    from tasks.report import histogram_chart, quality_marks

    result, attrs, docs = _ingest_and_quality(
        tmp_path, {"enabled": True, "combined": {"min_score": 0.2},
                   "thresholds": [{"name": "top-third", "attribute": stage.COMBINED, "keep_top_percent": 33}]})
    cfg = QualityConfig(enabled=True, combined={"min_score": 0.2},
                        thresholds=[{"name": "top-third", "attribute": stage.COMBINED, "keep_top_percent": 33}])

    class Ctx:  # quality_figures reads only the config
        config = type("C", (), {"quality": cfg})()

    threshold = {"name": "top-third", "attribute": stage.COMBINED, "keep_top_percent": 33, "value": 0.61,
                 "docs_in": 10, "kept": 4}
    q = quality_figures(Ctx(), {"quality": [result], "quality_threshold_values": [{"thresholds": [threshold]}]},
                        [{"stage": "quality", "dropped": result["funnel"]["dropped"]}])
    assert q["combined"] == "shipped" and stage.COMBINED in q["attributes"]
    hist = q["histograms"][stage.COMBINED]
    assert sum(hist["counts"]) == docs.num_rows
    m = {"quality": q, "config": {"quality": cfg.model_dump(mode="json")}}
    marks = quality_marks(m, stage.COMBINED)
    assert marks == {"top-third": 0.61, "combined": 0.2}
    svg = str(histogram_chart(f"chart-hist-{stage.COMBINED}", hist["bins"], hist["counts"], marks))
    assert svg.count('class="bar"') == 20 and svg.count('class="mark-line"') == 2
    assert 'data-label="combined" data-value="0.2"' in svg and 'data-label="top-third" data-value="0.61"' in svg


def test_a_scorer_trained_into_s3_is_scored_from_s3(stack, dev, tmp_path):
    """`refinery quality train --labels ... --output s3://...` writes the model to object storage
    (SeaweedFS here) and the quality stage's loader scores with it from there, as a pipeline's
    `combined: {model: s3://...}` does; the labels are read from S3 too."""
    import os

    import s3fs

    data, x = dev
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}, skip_instance_cache=True)
    fs.put_file(str(shared(DEV)), "refinery/labels/dev.parquet")
    run = _cli("quality", "train", "--labels", "s3://refinery/labels/dev.parquet#text,label",
               "--output", "s3://refinery/models/quality-ours")
    assert run.exit_code == 0, run.stderr
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("refinery/models/quality-ours")) == sorted(
        [scorer.SCORER_FILE, scorer.CLASSIFIER_FILE, scorer.CARD_FILE])
    model = scorer.load_scorer("s3://refinery/models/quality-ours", os.environ["AWS_ENDPOINT_URL"])
    assert np.allclose(model.predict(x), scorer.load_scorer().predict(x))  # same labels: the shipped weights
    card = json.loads(fs.cat_file("refinery/models/quality-ours/" + scorer.CARD_FILE))
    assert card["labels"]["documents"] == 218 and card["cross_validation"]["auc_mean"] > 0.7
