"""``refinery prox train``: learn the line model of the learned writer from pairs of (page
text, the text a person kept of it), and store the model and its card.

Pairs are read from Parquet or JSONL at any fsspec URL, named ``URL#page_column,kept_column``.
A page line is labelled content when it is aligned to the kept text (``tasks.prox.lines``).
Bad pairs never stop training; they are counted and listed in the card:

- ``empty_page`` / ``empty_kept``: nothing to learn from;
- ``other_language``: the kept text is not found in the page and is in another language than
  the page (fastText lid.176), or is outside ``languages`` when that is given;
- ``kept_not_in_page``: under ``min_coverage`` of the kept text's characters are in lines of
  the page (another page's text, or an extraction the page's lines cannot reproduce);
- ``teacher_program_failed``: a page a teacher model labelled (``teacher_pairs``) where one of
  its chunk programs failed, so its lines cannot be told apart.

The model: two LightGBM passes (``tasks.prox.learned``). The second pass learns from the
first pass's out-of-fold probabilities (folds grouped by site), so that it sees first-pass
errors as they are on pages the first pass never saw. The card's held-out figures come from a
model trained without a share of the sites (chosen by a hash of the site name) and scored on
those sites; the stored model is then trained on every site.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from tasks.prox import learned
from tasks.prox import lines as L

MODEL_FILE = "model.json.gz"
CARD_FILE = "model_card.json"
SHARED = Path(os.environ.get("REFINERY_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
DEFAULT_PAIRS = [
    "web_pages_readability/web_pages_readability.parquet#page_text,main_text",
    "web_pages_scrapinghub/web_pages_scrapinghub.parquet#page_text,gold_text",
]
STOPWORD_LANGUAGES = ("en", "fr", "de", "es", "pt", "it", "nl", "ru", "id", "pl", "cs")
STOPWORDS_PER_LANGUAGE = 60


class PairsError(ValueError):
    """Training pairs that cannot be read at all; the message names the file."""


@dataclass(frozen=True)
class TrainParams:
    rounds: int = 150
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 40
    folds: int = 5  # out-of-fold first-pass probabilities for the second pass, grouped by site
    validation_fraction: float = 0.2  # share of sites held out for the card's figures
    threshold: float = 0.5
    min_doc_words: int = 20
    min_coverage: float = 0.5
    languages: tuple[str, ...] = ()  # kept texts in other languages are bad pairs; empty: any
    max_pairs: int | None = None  # per pairs URL
    seed: int = 0


@dataclass
class Pairs:
    pages: list[str]
    kept: list[str]
    ids: list[str]  # the url or id column, else the row number
    sites: list[str]
    origin: list[str]  # the pairs URL each row came from
    failed: dict[int, str] = field(default_factory=dict)  # rows known bad when read: index -> reason


def default_pairs() -> list[str]:
    """The two shared sets beside the checkout (or under REFINERY_SHARED_DATA)."""
    out = []
    for rel in DEFAULT_PAIRS:
        path, _, cols = rel.partition("#")
        if not (SHARED / path).is_file():
            raise PairsError(f"no pairs given and the shared set {SHARED / path} is not there "
                             "(pass --pairs URL#page_column,kept_column, or set REFINERY_SHARED_DATA)")
        out.append(f"{SHARED / path}#{cols}")
    return out


def parse_pairs_url(url: str) -> tuple[str, str, str]:
    uri, _, cols = url.partition("#")
    parts = [c.strip() for c in cols.split(",")] if cols else []
    if len(parts) != 2 or not all(parts):
        raise PairsError(f"{url}: name the columns as URL#page_column,kept_column")
    return uri, parts[0], parts[1]


def site_of(key: str) -> str:
    """The site a pair belongs to: the host of a URL, else the id without a trailing ``-<n>``
    (Readability's test pages are named ``<site>-<n>``)."""
    host = urlsplit(key).hostname if "://" in key else None
    if host:
        return host.removeprefix("www.")
    return re.sub(r"-\d+$", "", key)


def _read_table(uri: str, endpoint_url: str | None) -> list[tuple[str, dict[str, Any]]]:
    """Rows of every data file of ``uri`` (file, folder or glob), with the file's URL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.ingest import InputError, expand_input
    from tasks.ingest_config import InputSpec
    from tasks.storage import filesystem_for

    try:
        _, urls, _ = expand_input(InputSpec(uri=uri), endpoint_url)
    except InputError as exc:
        raise PairsError(str(exc)) from None
    rows: list[tuple[str, dict[str, Any]]] = []
    for url in urls:
        fs, path = filesystem_for(url, endpoint_url)
        try:
            if path.endswith(".parquet"):
                with fs.open(path, "rb") as fh:
                    table = pq.read_table(fh)
                rows.extend((url, r) for r in table.to_pylist())
            else:
                import orjson

                with fs.open(path, "rb", compression="infer") as fh:
                    for k, line in enumerate(fh):
                        if line.strip():
                            try:
                                rows.append((url, orjson.loads(line)))
                            except orjson.JSONDecodeError as exc:
                                raise PairsError(f"{url}: line {k + 1} is not JSON ({exc})") from None
        except (OSError, pa.ArrowException) as exc:
            raise PairsError(f"{url}: cannot read it ({exc})") from None
    return rows


def read_pairs(urls: list[str], endpoint_url: str | None = None, max_pairs: int | None = None) -> Pairs:
    from tasks.ingest_config import IngestConfig

    form = IngestConfig().unicode_form  # the pages are normalized as a release normalizes documents
    out = Pairs([], [], [], [], [])
    for url in urls:
        uri, page_col, kept_col = parse_pairs_url(url)
        rows = _read_table(uri, endpoint_url)
        if max_pairs is not None:
            rows = rows[:max_pairs]
        for file_url, row in rows:
            if not isinstance(row, dict):
                raise PairsError(f"{file_url}: a row is not an object with columns ({type(row).__name__})")
            for col in (page_col, kept_col):
                if col not in row:
                    raise PairsError(f"{file_url}: no column {col!r} (has {', '.join(sorted(row)) or 'none'})")
        for k, (_, row) in enumerate(rows):
            ident = row.get("url") or row.get("id") or f"row {k}"
            out.pages.append(_norm(row[page_col], form))
            out.kept.append(_norm(row[kept_col], form))
            out.ids.append(str(ident))
            out.sites.append(site_of(str(ident)))
            out.origin.append(url)
    return out


def teacher_pairs(urls: list[str], llm: Any, cache_root: str, endpoint_url: str | None = None,
                  max_pairs: int | None = None, prox: Any = None) -> Pairs:
    """Pairs written by a teacher: the ``teacher`` writer (an instruction-tuned model behind
    ``llm``) writes chunk programs for the pages at ``urls`` (``URL#page_column``), the
    interpreter runs them, and what they keep is the kept text. A page where a chunk program
    failed (unparsable, or reaching outside its chunk) gets an empty kept text, so it is
    counted as a bad pair rather than learned with the failed chunk's lines as content.
    Responses are cached under ``cache_root`` (state/llm_cache/), as a release caches them."""
    from tasks.ingest_config import IngestConfig
    from tasks.llm.client import LLMClient, token_counter
    from tasks.prox import stage
    from tasks.prox.config import ProxConfig
    from tasks.prox.writers import ModelWriter
    from tasks.storage import StorageSpec

    prox = prox or ProxConfig()
    form = IngestConfig().unicode_form
    out = Pairs([], [], [], [], [])
    client = LLMClient(llm, StorageSpec(cache_root, endpoint_url).open())
    writer = ModelWriter(client, True, prox.max_doc_program_tokens, prox.max_chunk_program_tokens)
    for url in urls:
        uri, _, col = url.partition("#")
        if not col or "," in col:
            raise PairsError(f"{url}: name the page column as URL#page_column")
        rows = _read_table(uri, endpoint_url)[:max_pairs]
        pages = []
        for file_url, row in rows:
            if not isinstance(row, dict) or col not in row:
                raise PairsError(f"{file_url}: no column {col!r}")
            pages.append(_norm(row[col], form))
        todo = [k for k, p in enumerate(pages) if p.strip()]
        cfg = prox.model_copy(update={"enabled": True, "doc_level": False, "compat": False})
        res = stage.refine([pages[k] for k in todo], cfg, writer, token_counter(llm))
        kept = [""] * len(pages)
        errors = res.attributes["prox__program__errors"].to_pylist()
        for k, text, keep, bad in zip(todo, res.text, res.keep, errors, strict=True):
            kept[k] = text if keep and not bad else ""
            if bad:
                out.failed[len(out.pages) + k] = "teacher_program_failed"
        for k, (_, row) in enumerate(rows):
            ident = str(row.get("url") or row.get("id") or f"row {k}")
            out.pages.append(pages[k])
            out.kept.append(kept[k])
            out.ids.append(ident)
            out.sites.append(site_of(ident))
            out.origin.append(f"teacher {client.identity} on {url}")
    return out


def _norm(value: Any, form: str) -> str:
    if not isinstance(value, str):
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize(form, text) if form != "none" else text


def check_pairs(pairs: Pairs, params: TrainParams) -> tuple[list[int], list[list[bool]], list[dict[str, Any]]]:
    """The usable pairs (indices and line labels) and the bad ones, each with its reason."""
    good: list[int] = []
    labels: list[list[bool]] = []
    bad: list[dict[str, Any]] = []
    suspect: list[int] = []
    for i, (page, kept) in enumerate(zip(pairs.pages, pairs.kept, strict=True)):
        if i in pairs.failed:
            bad.append(_bad(pairs, i, pairs.failed[i]))
            continue
        if not page.strip():
            bad.append(_bad(pairs, i, "empty_page"))
            continue
        if not kept.strip():
            bad.append(_bad(pairs, i, "empty_kept"))
            continue
        lab = L.content_labels(page, kept)
        cov = L.coverage(page, kept, lab)
        if cov < params.min_coverage:
            suspect.append(i)
            bad.append(_bad(pairs, i, "kept_not_in_page", coverage=round(cov, 4)))
            continue
        good.append(i)
        labels.append(lab)
    if suspect or params.languages:
        from tasks.quality.lid import predict

        by_index = {b["index"]: b for b in bad}
        for i in suspect:  # not found in the page: in another language than the page?
            (kl, pl), (kp, pp) = predict([pairs.kept[i], pairs.pages[i]])
            if kl != pl and kp >= 0.5 and pp >= 0.5:
                by_index[i].update(reason="other_language", kept_language=kl, page_language=pl)
        if params.languages and good:
            langs, _ = predict([pairs.kept[i] for i in good])
            outside = {i: lang for i, lang in zip(good, langs, strict=True) if lang not in params.languages}
            bad += [_bad(pairs, i, "other_language", kept_language=lang) for i, lang in outside.items()]
            keep = [k for k, i in enumerate(good) if i not in outside]
            good, labels = [good[k] for k in keep], [labels[k] for k in keep]
    bad.sort(key=lambda b: b["index"])
    return good, labels, bad


def _bad(pairs: Pairs, i: int, reason: str, **extra: Any) -> dict[str, Any]:
    return {"index": i, "pairs": pairs.origin[i], "id": pairs.ids[i], "reason": reason, **extra}


def stopwords() -> frozenset[str]:
    """The most frequent words of the languages in ``STOPWORD_LANGUAGES`` (wordfreq); stored in
    the model, so a model keeps its features whatever wordfreq version is installed later."""
    from wordfreq import top_n_list

    return frozenset(w for lang in STOPWORD_LANGUAGES for w in top_n_list(lang, STOPWORDS_PER_LANGUAGE))


def _lgb_params(p: TrainParams, seed: int) -> dict[str, Any]:
    # one thread and deterministic: the same data gives the same model bytes on any machine
    return {"objective": "binary", "learning_rate": p.learning_rate, "num_leaves": p.num_leaves,
            "min_data_in_leaf": p.min_data_in_leaf, "feature_fraction": 0.8, "bagging_fraction": 0.8,
            "bagging_freq": 1, "lambda_l2": 1.0, "num_threads": 1, "deterministic": True, "force_col_wise": True,
            "seed": seed, "verbose": -1}


def _fit(X: np.ndarray, y: np.ndarray, p: TrainParams, seed: int) -> Any:
    import lightgbm

    return lightgbm.train(_lgb_params(p, seed), lightgbm.Dataset(X, y, free_raw_data=True), p.rounds)


def group_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number of each row: whole sites go to one fold, by a hash of the site name."""
    names = sorted(set(groups.tolist()))
    k = max(2, min(k, len(names)))
    order = sorted(names, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).digest())
    fold_of = {g: i % k for i, g in enumerate(order)}
    return np.array([fold_of[g] for g in groups.tolist()])


def fit_boosters(X: np.ndarray, y: np.ndarray, offsets: np.ndarray, groups: np.ndarray, p: TrainParams) -> list[Any]:
    """First pass on everything; second pass on the features plus the first pass's
    out-of-fold probabilities (``p.folds`` folds of whole sites)."""
    first = _fit(X, y, p, p.seed)
    folds = group_folds(groups, p.folds, p.seed)
    oof = np.zeros(len(y))
    for f in np.unique(folds):
        test = folds == f
        if test.all():
            oof[:] = first.predict(X, num_threads=1)
            break
        oof[test] = _fit(X[~test], y[~test], p, p.seed).predict(X[test], num_threads=1)
    second = _fit(np.column_stack([X, learned.stack_features(oof, offsets)]), y, p, p.seed + 1)
    return [first, second]


@dataclass
class LineData:
    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    groups: np.ndarray  # site of each row


def line_data(pages: list[str], labels: list[list[bool]], sites: list[str], words: frozenset[str]) -> LineData:
    """Features of every line, the pages themselves being the recurrence context (as a shard
    is for the pages in it)."""
    X, offsets = learned.features(pages, words, learned.document_frequencies(pages))
    y = np.concatenate([np.asarray(lab, dtype=np.int8) for lab in labels]) if labels else np.zeros(0, np.int8)
    groups = np.repeat(np.asarray(sites, dtype=object), np.diff(offsets))
    return LineData(X, y, offsets, groups)


def _subset(d: LineData, docs: np.ndarray) -> LineData:
    rows = np.concatenate([np.arange(d.offsets[i], d.offsets[i + 1]) for i in docs]) if len(docs) else \
        np.zeros(0, np.int64)
    sizes = np.diff(d.offsets)[docs]
    return LineData(d.X[rows], d.y[rows], np.concatenate(([0], np.cumsum(sizes))), d.groups[rows])


def train_model(pages: list[str], labels: list[list[bool]], sites: list[str], p: TrainParams,
                meta: dict[str, Any] | None = None) -> learned.LineModel:
    """A line model trained on these pages (every one of them)."""
    words = stopwords()
    d = line_data(pages, labels, sites, words)
    if len(np.unique(d.y)) < 2:
        raise ValueError(f"the {len(pages)} usable pages have no {'content' if not d.y.any() else 'boilerplate'} "
                         "lines to learn from")
    boosters = fit_boosters(d.X, d.y, d.offsets, d.groups, p)
    return learned.LineModel(boosters, p.threshold, words, p.min_doc_words, meta or {})


def train(pairs: Pairs, p: TrainParams) -> tuple[learned.LineModel, dict[str, Any]]:
    """Check the pairs, measure a model on held-out sites, then train the model on all of
    them. Returns the model and the figures for its card."""
    good, labels, bad = check_pairs(pairs, p)
    if not good:
        raise ValueError(f"no usable training pairs among {len(pairs.pages)} (bad: {_reasons(bad)})")
    pages = [pairs.pages[i] for i in good]
    sites = [pairs.sites[i] for i in good]
    site_names = sorted(set(sites))
    held = {s for s in site_names
            if int.from_bytes(hashlib.sha256(f"{p.seed}:{s}".encode()).digest()[:8], "big") / 2**64
            < p.validation_fraction}
    figures: dict[str, Any] = {
        "pairs": len(pairs.pages), "used": len(good), "bad": _reasons(bad), "sites": len(site_names),
        "lines": sum(len(lab) for lab in labels), "content_lines": sum(sum(lab) for lab in labels),
    }
    val_docs = [k for k, s in enumerate(sites) if s in held]
    train_docs = [k for k, s in enumerate(sites) if s not in held]
    if val_docs and train_docs:
        model = train_model([pages[k] for k in train_docs], [labels[k] for k in train_docs],
                            [sites[k] for k in train_docs], p)
        val_pages = [pages[k] for k in val_docs]
        # the held-out pages are their own recurrence context, as a shard of new pages would be
        prob, offsets = model.content_probability(val_pages, learned.document_frequencies(val_pages))
        kept = [(prob[offsets[k]: offsets[k + 1]] >= p.threshold).tolist() for k in range(len(val_docs))]
        s = L.scores([labels[k] for k in val_docs], kept)
        figures["validation"] = {"sites": len(held), "pages": len(val_docs), "lines": s["lines"], **s["content"],
                                 "boilerplate": s["boilerplate"]}
    else:
        figures["validation"] = {"sites": 0, "pages": 0, "note": "too few sites to hold any out"}
    meta = {"pairs": sorted(set(pairs.origin)), "used": len(good), "lines": figures["lines"]}
    model = train_model(pages, labels, sites, p, meta)
    figures["bad_pairs"] = bad
    return model, figures


def _reasons(bad: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for b in bad:
        out[b["reason"]] = out.get(b["reason"], 0) + 1
    return dict(sorted(out.items()))


def licenses(urls: list[str]) -> dict[str, str]:
    """What is known of each pairs file's license: the ``License:`` line of a SOURCE.md beside
    it, else the names of LICENSE files there, else "not stated"."""
    out = {}
    for url in urls:
        uri = url.rsplit(" on ", 1)[-1].partition("#")[0]  # a teacher's pages: the pages' own license
        folder = Path(uri).parent if "://" not in uri else None
        text = "not stated"
        if folder is not None and (folder / "SOURCE.md").is_file():
            m = re.search(r"^-?\s*License:\s*(.+)$", (folder / "SOURCE.md").read_text(errors="replace"), re.M | re.I)
            if m:
                text = m.group(1).strip()
        if text == "not stated" and folder is not None and folder.is_dir():
            names = sorted(p.name for p in folder.iterdir() if p.name.upper().startswith("LICENSE"))
            if names:
                text = "see " + ", ".join(names)
        out[url] = text
    return out


def model_card(name: str, urls: list[str], p: TrainParams, figures: dict[str, Any], sha256: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "ProX learned writer: LightGBM line classifier, two passes",
        "format": learned.FORMAT,
        "version": learned.VERSION,
        "created": datetime.now(UTC).isoformat(),
        "data": urls,
        "licenses": licenses(urls),
        "labels": "a page line is content when it is aligned to the kept text (tasks/prox/lines.py)",
        "params": {**asdict(p), "languages": list(p.languages)},
        "features": learned.FEATURES,
        "stack_features": learned.STACK_FEATURES,
        "counts": {k: v for k, v in figures.items() if k not in ("validation", "bad_pairs")},
        "validation": figures.get("validation", {}),
        "bad_pairs": figures.get("bad_pairs", []),
        "model_sha256": sha256,
    }


def train_to_storage(urls: list[str] | None, output: str, p: TrainParams, name: str | None = None,
                     endpoint_url: str | None = None, teacher_pages: list[str] | None = None,
                     llm: Any = None) -> dict[str, Any]:
    """Train on the pairs (and on the pages a teacher model labelled through ``llm``) and write
    ``model.json.gz`` then ``model_card.json`` under ``output`` (any fsspec URL); returns the
    card. Neither pairs nor teacher pages: the two shared sets."""
    from tasks.storage import Storage, StorageSpec, canonical_json

    urls = list(urls) if urls else ([] if teacher_pages else default_pairs())
    for url in urls:
        parse_pairs_url(url)  # a malformed name fails before anything is read
    pairs = read_pairs(urls, endpoint_url, p.max_pairs)
    if teacher_pages:
        from tasks.llm.config import LLMConfig

        taught = teacher_pairs(teacher_pages, llm or LLMConfig(), output.rstrip("/") + "/teacher", endpoint_url,
                               p.max_pairs)
        pairs.failed.update({len(pairs.pages) + i: reason for i, reason in taught.failed.items()})
        for key in ("pages", "kept", "ids", "sites", "origin"):
            getattr(pairs, key).extend(getattr(taught, key))
        urls = urls + sorted(set(taught.origin))
    model, figures = train(pairs, p)
    data = model.to_bytes()
    storage = Storage(StorageSpec(output, endpoint_url))
    storage.write_bytes(MODEL_FILE, data)
    card = model_card(name or output.rstrip("/").rsplit("/", 1)[-1], urls, p, figures,
                      hashlib.sha256(data).hexdigest())
    card["model"] = storage.url(MODEL_FILE)
    storage.write_bytes(CARD_FILE, canonical_json(card))  # last: the card vouches for a complete model
    return card
