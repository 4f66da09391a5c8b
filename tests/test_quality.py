"""Stage 4, quality: datatrove's filters as taggers, fastText language ID, the DCLM-style
classifier, rules and top-X% thresholds, on the shared corpora."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.config import ConfigError, InputSpec, QualityConfig, parse_config
from tasks.quality import heuristics, stage
from tasks.quality.classifier import TrainParams, score, split_of
from tasks.quality.rules import RuleError, compile_rule
from tasks.quality.training import corpus_spec, train_to_storage
from tests.conftest import shared


def _docs(path: str, text: str = "text", extra: tuple[str, ...] = ()) -> pa.Table:
    t = pq.read_table(shared(path))
    return pa.table({"id": pa.array([str(i) for i in t.column("page_id" if "simple" in path else "id").to_pylist()]),
                     "text": t.column(text), "source": pa.array(["test"] * t.num_rows),
                     "metadata": pa.nulls(t.num_rows, pa.string()), **{c: t.column(c) for c in extra}})


@pytest.fixture(scope="module")
def cc_web():
    docs = _docs("cc_web_samples/cc_web_samples.parquet", extra=("collection", "url"))
    cfg = QualityConfig(enabled=True)
    tagged = stage.tag(docs, cfg)
    decisions = stage.apply_rules(docs, tagged.attributes, stage.stage_rules(cfg))
    return docs, tagged.attributes, decisions


def _rows(cc_web, collection_prefix: str) -> list[int]:
    docs = cc_web[0]
    return [i for i, c in enumerate(docs.column("collection").to_pylist()) if c.startswith(collection_prefix)]


def test_non_english_pages_are_tagged_and_dropped_by_the_language_rule(cc_web):
    docs, attrs, dec = cc_web
    langs = attrs["quality__lid__lang"].to_pylist()
    japanese = _rows(cc_web, "warc_html_to_text (ClueWeb")
    assert len(japanese) == 29
    assert all(langs[i] == "ja" and dec.reason[i] == "language" and dec.detail[i] == "ja" for i in japanese)
    spanish = _rows(cc_web, "stackexchange")
    es = [i for i in spanish if langs[i] == "es"]
    print(f"Spanish Q&A: {len(es)}/{len(spanish)} identified as es; others: "
          f"{Counter(langs[i] for i in spanish if langs[i] != 'es')}")
    assert len(es) >= 0.85 * len(spanish)
    assert all(dec.reason[i] == "language" for i in es)
    # an English-labelled row is never dropped for its language unless its score is low
    scores = stage.rule_values(attrs["quality__lid__score"])
    for i in range(docs.num_rows):
        if dec.reason[i] == "language":
            assert langs[i] != "en" or scores[i] < 0.65


def test_spam_pages_are_dropped(cc_web):
    docs, attrs, dec = cc_web
    spam = _rows(cc_web, "warc_html_to_text (Common Crawl, multilingual")
    reasons = Counter(dec.reason[i] for i in spam)
    print("multilingual/spam WARC pages:", dict(reasons))
    chinese = [i for i in spam if attrs["quality__lid__lang"][i].as_py() == "zh"]
    assert len(chinese) >= 10
    assert all(dec.reason[i] == "language" for i in chinese)
    assert reasons[None] <= 2  # almost no spam page survives


def test_menu_heavy_pages_get_line_tags_and_heuristic_reasons(cc_web):
    docs, attrs, dec = cc_web
    removed = stage.rule_values(attrs["quality__c4_quality__removed_fraction"])
    menus = _rows(cc_web, "cc_raw_text") + _rows(cc_web, "warc_html_to_text (2024")
    clean = _rows(cc_web, "c4_en")
    menu_share, clean_share = statistics.median(removed[menus]), statistics.median(removed[clean])
    print(f"median share of characters in lines C4 would remove: menu-heavy {menu_share:.2f}, C4 {clean_share:.2f}")
    assert menu_share > 0.3 and clean_share < 0.05
    spans = attrs["quality__c4_quality__removed_lines"].to_pylist()
    texts = docs.column("text").to_pylist()
    for i in menus:
        assert spans[i], "a menu-heavy page has lines C4 removes"
        for s in spans[i]:  # every span is one whole line of the text
            line = texts[i][s["start"]: s["end"]]
            assert "\n" not in line and (s["start"] == 0 or texts[i][s["start"] - 1] == "\n")
    heuristic = {"gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"}
    dropped = [i for i in menus if dec.reason[i] in heuristic]
    kept_clean = [i for i in clean if dec.reason[i] is None]
    print(f"menu-heavy dropped by a heuristic: {len(dropped)}/{len(menus)}; C4 pages kept {len(kept_clean)}/{len(clean)}")
    assert len(dropped) >= 0.5 * len(menus)
    assert len(kept_clean) >= 0.75 * len(clean)
    for i in dropped:  # the reject detail is datatrove's own reason
        assert dec.detail[i] == attrs[f"quality__{dec.reason[i]}__reason"][i].as_py()


@pytest.mark.parametrize("name", heuristics.TAGGERS)
def test_decisions_equal_datatrove_pipeline_on_shared_data(name):
    """Our tags against datatrove's own ``run`` (a fresh filter in a pipeline), per document,
    with its dropped_<reason> statistics."""
    from datatrove.data import Document

    docs = pa.concat_tables([
        _docs("cc_web_samples/cc_web_samples.parquet"),
        _docs("web_pages_readability/web_pages_readability.parquet", "page_text"),
        _docs("simple_wikipedia/simple_wikipedia.parquet").slice(0, 400),
        _docs("redpajama_cc_simplified/redpajama_cc_simplified.parquet", "original"),
    ])
    texts, ids = docs.column("text").to_pylist(), [f"{k}" for k in range(docs.num_rows)]
    ours = heuristics.tag(name, {}, texts, ids)
    passed = [s[0]["score"] == 1.0 for s in ours.columns[f"quality__{name}__pass"].to_pylist()]
    reasons = ours.columns[f"quality__{name}__reason"].to_pylist()
    assert not any(r and r.startswith("error_") for r in reasons)
    flt = heuristics.make_filter(name, {})
    kept = {d.id for d in flt.run(iter(Document(text=t, id=i) for t, i in zip(texts, ids, strict=True)))}
    assert kept == {i for i, p in zip(ids, passed, strict=True) if p}
    theirs = {k.removeprefix("dropped_"): v.total for k, v in flt.stats.stats.items()
              if k.startswith("dropped_")}
    assert theirs == dict(Counter(r for r in reasons if r))
    print(f"{name}: {len(kept)}/{len(ids)} kept, reasons {theirs}")


def test_c4_as_modifier_removes_exactly_the_tagged_lines():
    docs = _docs("web_pages_readability/web_pages_readability.parquet", "page_text").slice(0, 30)
    texts = docs.column("text").to_pylist()
    res = heuristics.tag("c4_quality", {}, texts, docs.column("id").to_pylist(), modify=True)
    passed = [s[0]["score"] for s in res.columns["quality__c4_quality__pass"].to_pylist()]
    spans = res.columns["quality__c4_quality__removed_lines"].to_pylist()
    for text, new, ok, sp in zip(texts, res.new_text, passed, spans, strict=True):
        if not ok:
            assert new == text
            continue
        removed = {(s["start"], s["end"]) for s in sp}
        kept_lines, pos = [], 0
        for line in text.splitlines(keepends=True):
            body = line.rstrip("\r\n")
            if (pos, pos + len(body)) not in removed and body.strip():
                kept_lines.append(body.strip())
            pos += len(line)
        # C4 also strips citation marks like [1] from the lines it keeps
        assert [ln for ln in new.split("\n")] == [
            __import__("re").sub(r"\[\d*]|\[edit]|\[citation needed]", "", ln) for ln in kept_lines]


def _auc_by_pairs(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_classifier_separates_documents_it_did_not_train_on(tmp_path):
    positive = [str(shared("simple_wikipedia/simple_wikipedia.parquet")),
                f"{shared('redpajama_cc_simplified/redpajama_cc_simplified.parquet')}#simplified"]
    negative = [f"{shared('web_pages_readability/web_pages_readability.parquet')}#page_text",
                str(shared("cc_web_samples/cc_web_samples.parquet"))]
    params = TrainParams(dim=64, bucket=100_000, validation_fraction=0.2, seed=3)
    card = train_to_storage(positive, negative, str(tmp_path / "model"), params, "test-quality")
    assert (tmp_path / "model" / "model.bin").is_file() and (tmp_path / "model" / "model_card.json").is_file()
    val = card["validation"]
    print(f"model card: train {card['counts']['train']}, validation {val}")
    # score the held-out documents ourselves and compute the AUC independently
    from tasks.ingest import read_texts

    held = [(t, 1) for u in positive for t in read_texts(corpus_spec(u)) if split_of(
        " ".join(t.split()), 0.2, 3)]
    held += [(t, 0) for u in negative for t in read_texts(corpus_spec(u)) if split_of(" ".join(t.split()), 0.2, 3)]
    scores = score([t for t, _ in held], card["model"])
    labels = np.array([y for _, y in held])
    assert len(held) == val["positive"] + val["negative"]
    auc = _auc_by_pairs(scores, labels)
    print(f"held-out AUC {auc:.4f} on {labels.sum()} positive / {(1 - labels).sum()} negative documents")
    assert abs(auc - val["auc"]) < 1e-3
    assert auc >= 0.85


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=300).map(
    lambda v: [round(x, 1) for x in v]), st.floats(0.5, 100))
@settings(max_examples=200, deadline=None)
def test_top_percent_keeps_that_share_up_to_ties(values, percent):
    arr = np.array(values)
    v = stage.top_percent_threshold(arr, percent)
    k = math.ceil(len(arr) * percent / 100)
    kept = int((arr >= v).sum())
    ties = int((arr == v).sum())
    assert k <= kept <= k + ties - 1


@given(st.text(max_size=300))
@settings(max_examples=500, deadline=None)
def test_rule_parser_returns_a_rule_or_a_rule_error(text):
    try:
        rule = compile_rule("fuzz", text)
    except RuleError as exc:
        assert "'fuzz'" in str(exc)
    else:
        assert rule.name == "fuzz"


@given(st.recursive(
    st.sampled_from(["chars", "words", "quality__lid__score", "1", "0.5", "'en'", "quality__lid__lang", "None"]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or ", " < ", " == ", " + ", " / ", " in "]), inner).map("".join),
        inner.map(lambda x: f"not ({x})"), inner.map(lambda x: f"length({x})")),
    max_leaves=12))
@settings(max_examples=300, deadline=None)
def test_rule_evaluation_fails_only_with_a_rule_error(expr):
    docs = _docs("cc_web_samples/cc_web_samples.parquet").slice(0, 20)
    n = docs.num_rows
    attrs = {"quality__lid__score": pa.array([[{"start": 0, "end": 1, "score": i / n}] for i in range(n)],
                                             stage.heuristics.SPANS),
             "quality__lid__lang": pa.array(["en", None] * (n // 2))}
    try:
        rule = compile_rule("gen", expr)
        dec = stage.apply_rules(docs, attrs, [(rule, None)])
    except RuleError as exc:
        assert "'gen'" in str(exc)
    else:
        assert len(dec.keep) == n


def test_malformed_rules_name_the_rule():
    for expr in ["quality__lid__score <", "__import__('os').system('true')", "open('x')", "text.upper()",
                 "[x for x in text]", "lambda: 1"]:
        with pytest.raises(ConfigError, match="rule 'bad-rule'"):
            parse_config({"quality": {"enabled": True, "rules": [{"name": "bad-rule", "exclude": expr}]}})
    # unknown names fail when the config is validated, not in the middle of a run
    with pytest.raises(ConfigError, match="rule 'typo': unknown name.*quality__lid__scor"):
        parse_config({"quality": {"enabled": True, "rules": [{"name": "typo", "exclude": "quality__lid__scor > 1"}]}})
    cfg = parse_config({"quality": {"enabled": False, "rules": [{"name": "typo", "exclude": "quality__lid__scor > 1"}]}})
    with pytest.raises(RuleError, match="rule 'typo': unknown name.*quality__lid__scor"):
        stage.stage_rules(cfg.quality)  # the stage checks again (a config built without validation)
    with pytest.raises(ConfigError, match="gopher_quality: bad parameters"):
        parse_config({"quality": {"gopher_quality": {"params": {"min_words": 3}}}})


def test_rules_over_metadata_and_builtins():
    t = pq.read_table(shared("cc_web_samples/cc_web_samples.parquet"), columns=["id", "text", "meta_json"])
    docs = pa.table({"id": t.column("id"), "text": t.column("text"), "source": pa.array(["cc"] * t.num_rows),
                     "metadata": t.column("meta_json")})
    import json

    metas = [json.loads(m) if m else {} for m in t.column("meta_json").to_pylist()]
    key = Counter(k for m in metas for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    field = key.most_common(1)[0][0]
    values = [m.get(field) for m in metas]
    present = sorted(v for v in values if isinstance(v, (int, float)))
    cut = present[len(present) // 2]
    rule = compile_rule("meta", f"metadata.{field} > {cut} and words >= 20")
    dec = stage.apply_rules(docs, {}, [(rule, None)])
    expected = [isinstance(v, (int, float)) and v > cut and len(tx.split()) >= 20
                for v, tx in zip(values, t.column("text").to_pylist(), strict=True)]
    assert list(~dec.keep) == expected and any(expected)
    inc = compile_rule("inc", f"metadata['{field}'] > {cut}", "include")
    dec = stage.apply_rules(docs, {}, [(inc, None)])
    assert list(dec.keep) == [isinstance(v, (int, float)) and v > cut for v in values]


def test_input_spec_of_training_urls():
    spec = corpus_spec("s3://bucket/data/*.parquet#simplified")
    assert isinstance(spec, InputSpec) and spec.uri == "s3://bucket/data/*.parquet" and spec.columns.text == "simplified"


@pytest.mark.slow
def test_quality_stage_through_the_flow(stack, ray_local, tmp_path):
    """Taggers, rules, classifier and a top-X% threshold in a real release: rejects carry the
    rule, the manifest's counts and histograms reconcile with the files."""
    from flows.curate import run_curate
    from tasks.config import PipelineConfig
    from tasks.storage import StorageSpec
    from tests.releases import expected_task_runs, prefect_runs, verify_release

    model = tmp_path / "model"
    card = train_to_storage(
        [str(shared("simple_wikipedia/simple_wikipedia.parquet"))],
        [f"{shared('web_pages_readability/web_pages_readability.parquet')}#page_text"],
        str(model), TrainParams(dim=64, bucket=100_000))
    inputs = [
        InputSpec(uri=str(shared("cc_web_samples/cc_web_samples.parquet")), source="cc_web"),
        InputSpec(uri=str(shared("redpajama_cc_simplified/redpajama_cc_simplified.parquet")), source="redpajama",
                  columns={"text": "original"}),
    ]
    cfg = PipelineConfig(
        release="q-1", output=str(tmp_path / "corpus"), inputs=inputs,
        quality={"enabled": True, "language_id": {"paragraphs": True}, "classifier": {"model": card["model"]},
                 "rules": [{"name": "short", "exclude": "words < 80"}],
                 "thresholds": [{"name": "top-classifier", "attribute": "quality__classifier__score",
                                 "keep_top_percent": 60}]})
    m = run_curate(cfg)
    storage = StorageSpec(cfg.output).open()
    verify_release(storage, m)
    q = m["quality"]
    funnel = {st["stage"]: st for st in m["funnel"]}
    assert list(funnel)[-2:] == ["quality", "quality_threshold"]
    rejects = pa.concat_tables([storage.read_parquet(f["path"]) for f in m["outputs"]["rejects"]
                                if "/quality" in f["path"]])
    by_reason = Counter(rejects.column("reason").to_pylist())
    assert q["rules"] == {name: by_reason.get(name, 0) for name in q["rules"]}
    assert list(q["rules"]) == ["language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality",
                                "short", "top-classifier"]
    assert q["rules"]["language"] > 0 and q["rules"]["short"] > 0
    lang_rows = rejects.filter(pa.compute.equal(rejects.column("reason"), "language"))
    assert set(lang_rows.column("detail").to_pylist()) >= {"es", "ja", "zh"}
    entering = funnel["quality"]["docs_in"]
    for name in ("quality__lid__score", "quality__classifier__score", "quality__c4_quality__removed_fraction",
                 "quality__combined__score"):
        assert sum(q["histograms"][name]["counts"]) == entering
    assert q["combined"] == "shipped"
    # the threshold: computed over every shard, keeps 60% of what the rules left, up to ties
    (t,) = q["thresholds"]
    n = funnel["quality_threshold"]["docs_in"]
    assert t["docs_in"] == n == funnel["quality"]["docs_out"]
    assert math.ceil(0.6 * n) <= t["kept"] == funnel["quality_threshold"]["docs_out"] < n
    attrs = pa.concat_tables([storage.read_parquet(f["path"]) for f in m["outputs"]["attributes"]
                              if "/attributes/quality/" in f["path"]])
    assert attrs.num_rows == entering
    score_of = dict(zip(attrs.column("id").to_pylist(),
                        stage.rule_values(attrs.column("quality__classifier__score")), strict=True))
    published = pa.concat_tables([storage.read_parquet(f["path"], columns=["id"]) for f in m["outputs"]["documents"]])
    assert published.num_rows == t["kept"]
    assert all(score_of[i] >= t["value"] for i in published.column("id").to_pylist())
    paragraphs = attrs.column("quality__lid__paragraphs").to_pylist()
    assert all(p for p in paragraphs)
    flow_run, task_runs = prefect_runs(m["flow_run_id"])
    assert flow_run["state_type"] == "COMPLETED"
    names = Counter(tr["name"].rsplit("-", 1)[0] for tr in task_runs)
    assert {k: names[k] for k in ("quality", "quality_threshold_values", "quality_threshold")} == {
        k: v for k, v in expected_task_runs(m, 2).items() if k.startswith("quality")}


def test_short_circuit_decides_exactly_as_tagging_everything(cc_web):
    docs, _, full = cc_web
    cfg = QualityConfig(enabled=True, short_circuit=True)
    tagged = stage.tag(docs, cfg)
    fast = stage.apply_rules(docs, tagged.attributes, stage.stage_rules(cfg))
    assert fast.reason == full.reason and fast.detail == full.detail
    # later taggers never saw what the language rule dropped
    dropped = [i for i, r in enumerate(full.reason) if r == "language"]
    assert all(tagged.attributes["quality__fineweb_quality__pass"][i].as_py() is None for i in dropped)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["\n", "\r\n", " ", "\t", "\xa0", "\u2028", "\x85", "\x0b", "\x1c",
                                           "\u3000", "a", "word", "é"]), st.characters()), max_size=30).map("".join))
def test_language_id_line_equals_the_regex_form(text: str) -> None:
    """lid.prepare (split at line breaks, strip) equals the one-line form fastText was given
    before, the regular expression ``\\s*\\n\\s*`` -> " " then strip."""
    from tasks.quality import lid

    assert lid.prepare(text) == lid.NEWLINES.sub(" ", text).strip()


def test_language_id_line_equal_on_every_shared_text() -> None:
    from tasks.quality import lid
    from tests.corpora import shared_texts

    texts, where = shared_texts()
    bad = [w for t, w in zip(texts, where, strict=True) if lid.prepare(t) != lid.NEWLINES.sub(" ", t).strip()]
    assert not bad, bad[:5]
