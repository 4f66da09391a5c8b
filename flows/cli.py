"""The ``refinery`` command line.

Prefect reads its settings when it is first imported, so every command that talks to
Prefect settles the environment (``PREFECT_API_URL`` of the local stack or of a shared
server) before importing anything from Prefect.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.stack import Stack, StackError, refinery_home
from tasks.config import ConfigError, InputSpec, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Refinery: curate pretraining corpora.")
config_app = typer.Typer(no_args_is_help=True, help="The pipeline config.")
app.add_typer(config_app, name="config")
export_app = typer.Typer(no_args_is_help=True, help="Export a release to other layouts.")
app.add_typer(export_app, name="export")
metrics_app = typer.Typer(no_args_is_help=True, help="Prometheus metrics of a corpus root.")
app.add_typer(metrics_app, name="metrics")
quality_app = typer.Typer(no_args_is_help=True, help="The quality stage's models.")
app.add_typer(quality_app, name="quality")
prox_app = typer.Typer(no_args_is_help=True, help="The ProX stage's learned writer.")
app.add_typer(prox_app, name="prox")
models_app = typer.Typer(no_args_is_help=True, help="Model files the stages use.")
app.add_typer(models_app, name="models")


def default_job_quality():
    """The bundled job's quality stage: every tagger runs (attributes, histograms, report), but
    only the language rule drops. The web-text heuristics would reject most of the Markdown
    and reStructuredText package descriptions (symbols count as non-words for Gopher), and
    fastText is less sure of English in Markdown, hence the lower language floor."""
    from tasks.config import QualityConfig

    tag_only = {"drop": False}
    return QualityConfig(enabled=True, language_id={"min_score": 0.3}, gopher_repetition=tag_only,
                         gopher_quality=tag_only, c4_quality=tag_only, fineweb_quality=tag_only)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _prefect_port() -> int:
    """The local stack's Prefect server port when `refinery run` starts it (4200);
    REFINERY_PREFECT_PORT lets a test (or a second REFINERY_HOME) start its own without
    touching the one on 4200."""
    raw = os.environ.get("REFINERY_PREFECT_PORT") or "4200"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        _fail(f"REFINERY_PREFECT_PORT={raw!r}: not a port number (1-65535)")
    return int(raw)


def _stack() -> Stack:
    return Stack(refinery_home())


def _ensure_prefect_server(needs_s3: bool, while_starting=None) -> bool:
    """Use PREFECT_API_URL when set; otherwise the local stack, started if needed. When it
    starts the Prefect server, ``while_starting(api_url)`` is called as soon as the server's
    process is launched, before waiting for it (Ray starts and the run's modules import while
    the server comes up). Returns whether it was called."""
    stack = _stack()
    status = stack.status()
    prefect_down = "PREFECT_API_URL" not in os.environ and not status.get("prefect", {}).get("healthy")
    need_up = prefect_down or (
        needs_s3 and "AWS_ENDPOINT_URL" not in os.environ and not status.get("s3", {}).get("healthy")
    )
    called = []

    def beside(api_url: str) -> None:
        called.append(api_url)
        while_starting(api_url)

    if need_up:
        typer.echo(f"starting the local stack under {stack.home} ...", err=True)
        stack.up(prefect_port=_prefect_port(), with_s3=needs_s3,
                 while_starting=beside if prefect_down and while_starting is not None else None)
    for key, value in stack.environment().items():
        os.environ.setdefault(key, value)
    return bool(called)


def _import_run_modules() -> None:
    """Import what ``run`` needs once the server is up (Prefect's client and flow engine, the
    stages): Prefect reads PREFECT_API_URL at import, so only once it is set."""
    import flows.console  # noqa: F401
    import flows.curate  # noqa: F401
    import tasks.parallel  # noqa: F401


@app.command()
def run(
    input: Annotated[list[str], typer.Option("--input", "-i", help="Input file, folder or glob (repeatable).")] = None,  # noqa: A002
    output: Annotated[str, typer.Option("--output", "-o", help="Corpus root to publish into.")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML file.")] = None,
    release: Annotated[str, typer.Option(help="Release id (rerunning an id resumes it).")] = None,
    source: Annotated[str, typer.Option(help="Source name for --input files.")] = None,
    text_field: Annotated[str, typer.Option(help="Text column of --input files.")] = None,
    id_field: Annotated[str, typer.Option(help="Id column of --input files.")] = None,
    ray_address: Annotated[str, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else local).")] = None,
    fail_fast: Annotated[bool, typer.Option(help="Abort when an input file cannot be read.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Print Prefect's and Ray's log lines here too (default: the log file).")] = False,
) -> None:
    """Curate one release. With no inputs at all, curates the bundled default input."""
    from tasks.timeline import mark

    mark("cli_run")
    try:
        cfg = load_config(config, release=release, output=output)
    except ConfigError as exc:
        _fail(str(exc))
    updates: dict = {}
    if input:
        columns = {"text": text_field or "text", "id": id_field}
        updates["inputs"] = list(cfg.inputs) + [InputSpec(uri=u, source=source, columns=columns) for u in input]
    execution = cfg.execution.model_copy(
        update={k: v for k, v in {"ray_address": ray_address, "fail_fast": fail_fast or None}.items() if v})
    updates["execution"] = execution
    cfg = cfg.model_copy(update=updates)
    home = refinery_home()
    if not cfg.inputs:
        from tasks.default_input import build_default_input

        folder = build_default_input(home / "default-input")
        typer.echo(f"no input given: curating the bundled default input (installed packages' texts) from {folder}",
                   err=True)
        cfg = cfg.model_copy(update={"inputs": [InputSpec(uri=f"{folder}/package_descriptions"),
                                                InputSpec(uri=f"{folder}/package_licenses")]})
        if config is None:  # the default job shows every non-model stage
            cfg = cfg.model_copy(update={"quality": default_job_quality()})
    if not cfg.output:
        cfg = cfg.model_copy(update={"output": str(home / "corpus")})
    try:
        cfg = load_config(None, **cfg.model_dump(mode="python", exclude_none=True))
    except ConfigError as exc:
        _fail(str(exc))
    from tasks.llm_runtime import require_llm_runtime

    try:
        require_llm_runtime(cfg)
    except ConfigError as exc:
        _fail(str(exc))
    uses_s3 = any(u.startswith("s3://") for u in [cfg.output] + [i.uri for i in cfg.inputs])
    cfg = cfg.export_secrets_to_env()
    from flows.warm import start_kernel_warmup, start_ray_early, take_early_ray

    start_kernel_warmup(cfg)  # compiles while the stack starts; see flows/warm.py

    def ray_beside_server(api_url: str) -> None:
        mark("server_launched")
        os.environ["PREFECT_API_URL"] = api_url  # what the stack's environment will say
        start_ray_early(cfg, quiet=not verbose, api_url=api_url)
        _import_run_modules()  # a second or two of imports, done while the server starts
        mark("run_modules_imported")

    try:
        started = _ensure_prefect_server(needs_s3=uses_s3 and not os.environ.get("AWS_ENDPOINT_URL"),
                                         while_starting=ray_beside_server)
    except StackError as exc:
        if take_early_ray() is not None:  # Ray started beside a server that then failed: stop it first
            import ray

            ray.shutdown()
        _fail(str(exc))
    mark("server_ready")
    if not started:
        start_ray_early(cfg, quiet=not verbose)  # while the flow below is imported and created; see flows/warm.py

    from flows.console import LogsToFile, StageProgress, run_log_path
    from flows.curate import ReleaseError, run_curate
    from tasks import parallel
    from tasks.ingest import InputError
    from tasks.manifest import summarize
    from tasks.parallel import PrefectServerMissing, ShardFailed

    parallel.EARLY_RAY = take_early_ray
    from tasks.quality.rules import RuleError

    local_log = run_log_path(home)
    try:
        if verbose:
            manifest = run_curate(cfg)
        else:
            from rich.console import Console

            with LogsToFile(local_log), StageProgress(Console(stderr=True)):
                manifest = run_curate(cfg)
    except (ReleaseError, InputError, PrefectServerMissing, ShardFailed, RuleError, ConfigError) as exc:
        _fail(str(exc) + ("" if verbose else f"\n(log: {local_log})"))
    mark("flow_returned")
    typer.echo(summarize(manifest))
    if not verbose:
        log_url = _keep_run_log(cfg, manifest["release"], local_log)
        typer.echo(f"log:     {log_url}")
    typer.echo(f"\nrelease: {cfg.output.rstrip('/')}/releases/{manifest['release']}")
    typer.echo(f"report:  {cfg.output.rstrip('/')}/releases/{manifest['release']}/report.html")
    mark("cli_done")
    if manifest["failures"]:
        raise typer.Exit(3)


def _keep_run_log(cfg, release: str, local_log: Path) -> str:
    """Copy the run's log file into the root's state folder beside the release's work; the
    local copy stays when that fails (the release is published either way)."""
    from tasks import layout
    from tasks.storage import StorageSpec

    try:
        storage = StorageSpec(cfg.output, cfg.storage.endpoint_url, cfg.storage.region).open()
        storage.write_bytes(layout.run_log_path(release), local_log.read_bytes())
        return storage.url(layout.run_log_path(release))
    except Exception:  # noqa: BLE001 - the log is a convenience; never fail a published run on it
        return str(local_log)


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML: inputs (partitioned roots) and output.")],
    cron: Annotated[str, typer.Option(help="Schedule of the refresh deployment (cron).")] = "0 3 * * *",
    interval: Annotated[int, typer.Option(help="Schedule every N seconds instead of the cron.")] = 0,
    shared_ray: Annotated[bool, typer.Option(
        "--shared-ray/--ray-per-run",
        help="One local Ray for this serve process, joined by every run (frequent runs), or one per run "
             "(the default: an idle Ray costs about 1.6 CPU-s a minute, README).")] = False,
    poll_seconds: Annotated[float, typer.Option(
        min=0, help="How often to look for runs to start (UI-triggered, scheduled). 0: "
                    "PREFECT_RUNNER_POLL_FREQUENCY when set, else 2.")] = 0,
) -> None:
    """Serve the pipeline's deployments: `curate/<name>` (UI-triggered, with a parameter form),
    `refresh/<name>` (scheduled) and `backfill/<name>`. With --shared-ray (and no cluster given
    by RAY_ADDRESS or `execution.ray_address`), one local Ray is started here and every flow run
    joins it."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _fail(str(exc))
    if not cfg.name:
        _fail(f"pipeline config {config}: `name` is required by `refinery serve` (it names the pipeline's "
              "deployments, tags and limits on the shared Prefect server)")
    cfg = cfg.export_secrets_to_env()
    try:
        _ensure_prefect_server(needs_s3=False)
    except StackError as exc:
        _fail(str(exc))
    from flows.deployments import serve_all
    from tasks.ray_local import SERVE_PID_ENV, SERVE_RAY_ENV

    for name in (SERVE_RAY_ENV, SERVE_PID_ENV):  # never an outer serve's Ray
        os.environ.pop(name, None)
    shared_ray = shared_ray and not (cfg.execution.ray_address or os.environ.get("RAY_ADDRESS"))
    if shared_ray:
        from tasks.ray_local import start_serve_ray, withdraw_serve_ray_when_dead

        # stopped with serve: Prefect's runner turns SIGTERM into an exit that runs the finally below
        typer.echo(f"Ray for this serve process's runs at {start_serve_ray(os.environ['PREFECT_API_URL'])}", err=True)
        withdraw_serve_ray_when_dead()
    try:
        # Prefect's runner looks for runs every 10 s by default: a run started from the UI would
        # wait up to 10 s (5 on average) before its process starts
        poll = poll_seconds or float(os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") or 2.0)
        serve_all(cfg, cron=None if interval else cron, interval=interval or None, query_seconds=poll)
    finally:
        if shared_ray:
            import ray

            ray.shutdown()


@app.command("backfill")
def backfill_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML; its inputs are partitioned roots.")],
    partition: Annotated[list[str], typer.Option("--partition", "-p", help="Partition name (repeatable).")] = None,
    start: Annotated[str, typer.Option(help="First partition name of a range (inclusive).")] = None,
    end: Annotated[str, typer.Option(help="Last partition name of a range (inclusive).")] = None,
    single: Annotated[bool, typer.Option(help="One release for all partitions instead of one each.")] = False,
    max_concurrent: Annotated[int, typer.Option(help="Partitions curated at once.")] = 2,
    prefix: Annotated[str, typer.Option(help="Release id prefix.")] = "backfill",
) -> None:
    """Curate a list or range of input partitions (one release each, or one for all)."""
    try:
        cfg = load_config(config).export_secrets_to_env()
        _ensure_prefect_server(needs_s3=False)
    except (ConfigError, StackError) as exc:
        _fail(str(exc))
    from flows.backfill import BackfillSpec, backfill
    from flows.curate import ReleaseError

    spec = BackfillSpec(partitions=partition or [], start=start, end=end, max_concurrent=max_concurrent,
                        mode="single" if single else "per_partition", release_prefix=prefix)
    try:
        ids = backfill(config=cfg, spec=spec)
    except ReleaseError as exc:
        _fail(str(exc))
    typer.echo("released: " + ", ".join(ids))


@app.command()
def up(
    prefect_port: Annotated[int, typer.Option(help="Prefect server port.")] = 4200,
    s3_port: Annotated[int, typer.Option(help="S3 gateway port.")] = 8333,
    s3: Annotated[bool, typer.Option(help="Also start the SeaweedFS S3 gateway.")] = True,
) -> None:
    """Start the local stack: Prefect server and SeaweedFS S3 on 127.0.0.1."""
    stack = _stack()
    try:
        stack.up(prefect_port=prefect_port, s3_port=s3_port, with_s3=s3)
    except StackError as exc:
        _fail(str(exc))
    _print_status(stack)
    typer.echo(f"\nclient environment (S3 keys included, keep private): source {stack.env_file}")


@app.command()
def down() -> None:
    """Stop what `refinery up` started (and nothing else)."""
    stopped = _stack().down()
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status(
    root: Annotated[str | None, typer.Argument(
        help="Corpus root whose catalog to rebuild and check (default: the local one, if any).")] = None,
) -> None:
    """Show the local stack's services; mark flow runs of killed processes crashed; rebuild a
    corpus root's catalog from its manifests, naming damaged ones."""
    stack = _stack()
    _print_status(stack)
    _crash_orphans(stack)
    _reap_ray_orphans()
    if root is None and (refinery_home() / "corpus" / "releases").is_dir():
        root = str(refinery_home() / "corpus")
    if root is not None:
        _print_catalog(root)


def _crash_orphans(stack: Stack) -> None:
    """Flow runs left RUNNING by a killed `refinery run` (see flows/orphans.py), when a
    Prefect server is configured or the local one is up."""
    if "PREFECT_API_URL" not in os.environ:
        if not stack.status().get("prefect", {}).get("healthy"):
            return
        os.environ["PREFECT_API_URL"] = stack.environment()["PREFECT_API_URL"]
    import httpx

    api = os.environ["PREFECT_API_URL"].rstrip("/")
    try:  # the Prefect client would retry for a long while against a server that is not there
        httpx.get(f"{api}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        typer.echo(f"flow runs: Prefect server at {api} not reachable ({type(exc).__name__}); not checked")
        return
    from flows.orphans import crash_orphans

    try:
        crashed = crash_orphans()
    except Exception as exc:  # noqa: BLE001 - status reports, it does not fail on the server
        typer.echo(f"flow runs: cannot check the Prefect server ({type(exc).__name__}: {exc})")
        return
    for run in crashed:
        typer.echo(f"flow run {run['name']} ({run['id']}): its process {run['process']} is gone; marked crashed")
    if not crashed:
        typer.echo("flow runs: none left running by a killed process")


def _reap_ray_orphans() -> None:
    from flows.orphans import reap_ray_orphans

    for left in reap_ray_orphans():
        typer.echo(f"ray: stopped {len(left['pids'])} process(es) of session {left['session']}, left by a killed run")


def _print_catalog(root: str) -> None:
    from tasks.publish import rebuild_catalog
    from tasks.storage import StorageError, StorageSpec, endpoint_from_env

    try:
        catalog = rebuild_catalog(StorageSpec(root, endpoint_from_env()).open())
    except (StorageError, OSError) as exc:
        _fail(f"{root}: cannot rebuild the catalog: {exc}")
    typer.echo(f"corpus root: {root}: {len(catalog['releases'])} release(s), latest {catalog['latest'] or '-'}")
    for d in catalog.get("damaged", []):
        typer.echo(f"  damaged (skipped): {d['error']}")


def _print_status(stack: Stack) -> None:
    st = stack.status()
    typer.echo(f"state folder: {stack.home}")
    if not st:
        typer.echo("no services started")
    for name, s in st.items():
        state = "healthy" if s["healthy"] else ("running, not healthy" if s["running"] else "stopped")
        typer.echo(f"  {name:<8} {state:<22} pid {s['pid']:<8} {s['url']}")


@app.command()
def manifest(
    url: Annotated[str, typer.Argument(help="Release URL (<root>/releases/<id>), its manifest.json, or a corpus root.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest itself.")] = False,
) -> None:
    """Summarize a release's manifest (a corpus root means its latest release)."""
    from tasks.manifest import summarize
    from tasks.release_url import read_manifest
    from tasks.storage import StorageError

    try:
        m = read_manifest(url)
    except (FileNotFoundError, ValueError, StorageError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(m, indent=2) if as_json else summarize(m))


@app.command()
def explain(
    url: Annotated[str, typer.Argument(help="Release URL (<root>/releases/<id>) or a corpus root (its latest).")],
    doc_id: Annotated[str, typer.Option("--id", help="The document id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Why a document was dropped, what it duplicated, and its fate across releases."""
    from tasks.explain import explain as explain_doc
    from tasks.explain import render
    from tasks.storage import StorageError

    try:
        result = explain_doc(url, doc_id)
    except (FileNotFoundError, ValueError, StorageError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else render(result))
    if not result["found"] and not result["other_releases"]:
        raise typer.Exit(4)


@export_app.command("dolma")
def export_dolma(
    url: Annotated[str, typer.Argument(help="Release URL (<root>/releases/<id>) or a corpus root (its latest).")],
    to: Annotated[str, typer.Option("--to", help="Output folder or URL.")],
) -> None:
    """Write a release in Dolma's layout: documents/*.jsonl.gz and row-aligned attributes/."""
    from tasks.export import export_dolma as export
    from tasks.storage import StorageError

    try:
        counts = export(url, to)
    except (FileNotFoundError, ValueError, StorageError) as exc:
        _fail(str(exc))
    typer.echo(f"exported {counts['documents']:,} documents in {counts['files']} files "
               f"({counts['attribute_files']} attribute files) to {to}")


@quality_app.command("train")
def quality_train(
    output: Annotated[str, typer.Option(help="Folder URL for the model files and model_card.json.")],
    positive: Annotated[list[str] | None, typer.Option(help="Good text: URL or URL#text_column (repeatable).")] = None,
    negative: Annotated[list[str] | None, typer.Option(help="Other text: URL or URL#text_column (repeatable).")] = None,
    labels: Annotated[list[str] | None, typer.Option(
        help="Labelled documents, URL#text_column,label_column (label 1/0; repeatable): train the combined "
             "score (with --positive/--negative, also its fastText classifier).")] = None,
    skip_bad_rows: Annotated[bool, typer.Option(help="Count and skip label rows without a binary label or text.")] = False,
    method: Annotated[str, typer.Option(
        help="Combined score weights: equal (fixed equal weights, only the calibration fitted; the shipped "
             "recipe, robust on a few hundred labels) or logistic (every weight fitted).")] = "equal",
    c: Annotated[float | None, typer.Option("--c", help="Combined score, --method logistic: inverse L2 strength "
                                                        "(default 0.1).")] = None,
    name: Annotated[str | None, typer.Option(help="Model name for the card; default: the folder name.")] = None,
    epoch: Annotated[int, typer.Option(help="fastText epochs.")] = 5,
    dim: Annotated[int, typer.Option(help="fastText vector size.")] = 100,
    bucket: Annotated[int, typer.Option(help="Hash buckets of the word bigrams.")] = 200_000,
    balance: Annotated[bool, typer.Option(help="Downsample the larger class to the smaller.")] = True,
    min_count: Annotated[int, typer.Option(help="Ignore words rarer than this.")] = 3,
    validation: Annotated[float, typer.Option(help="Share held out for validation.")] = 0.1,
    max_docs: Annotated[int | None, typer.Option(help="At most this many documents per corpus.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, of fastText and of the cross-validation.")] = 0,
) -> None:
    """Train a fastText quality classifier (DCLM recipe: word bigrams, hq vs cc labels) from
    --positive/--negative corpora, or, with --labels, the combined quality score."""
    from tasks.ingest import InputError
    from tasks.quality.classifier import TrainParams
    from tasks.quality.labels import LabelError
    from tasks.quality.models import ModelError
    from tasks.quality.training import train_scorer_to_storage, train_to_storage

    params = TrainParams(dim=dim, bucket=bucket, balance=balance, epoch=epoch, min_count=min_count, validation_fraction=validation, seed=seed,
                         max_docs_per_class=max_docs)
    if labels:
        try:
            card = train_scorer_to_storage(labels, output, positive, negative, params, c=c, skip_bad_rows=skip_bad_rows,
                                           method=method)
        except (LabelError, InputError, ModelError, ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        cv = card["cross_validation"]
        lo, hi = cv["auc_fold_interval_95"]
        typer.echo(f"combined score {card['model']}: {card['labels']['documents']} labelled documents; "
                   f"cross-validated AUC {cv['auc_mean']} (folds 95%: {lo}-{hi}; length alone {cv['baseline_auc_mean']}, "
                   f"beaten on {cv['beats_baseline_share']:.0%} of {cv['folds'] * cv['repeats']} folds)")
        return
    if not positive or not negative:
        _fail("give --positive and --negative corpora (a fastText classifier) or --labels (the combined score)")
    try:
        card = train_to_storage(positive, negative, output, params, name)
    except (InputError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    val = card["validation"]
    typer.echo(f"model {card['model']}: trained on {card['counts']['train']}, validation {val}")


@quality_app.command("eval")
def quality_eval(
    labels: Annotated[list[str], typer.Option(help="Labelled documents: URL#text_column,label_column (repeatable).")],
    attribute: Annotated[str, typer.Option(help="The score to evaluate.")] = "quality__combined__score",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Pipeline YAML whose quality section "
                                                "(taggers, models, cut-offs) is evaluated; default: every tagger.")] = None,
    output: Annotated[Path, typer.Option(help="Where to write the results as JSON.")] = Path("quality_eval.json"),
    skip_bad_rows: Annotated[bool, typer.Option(help="Count and skip rows without a binary label or text.")] = False,
) -> None:
    """AUC of a quality score against labels, precision and recall at its cut-offs, and every
    quality signal's own AUC."""
    from tasks.config import QualityConfig
    from tasks.quality.evaluate import EvalError, evaluate, summary
    from tasks.quality.labels import LabelError, read_labels
    from tasks.quality.models import ModelError

    try:
        cfg = load_config(config) if config else None
    except ConfigError as exc:
        _fail(str(exc))
    quality = cfg.quality if cfg is not None else QualityConfig(enabled=True)
    endpoint = cfg.storage.endpoint_url if cfg is not None else None
    try:
        data = read_labels(labels, skip_bad_rows, endpoint)
        result = evaluate(data, quality, attribute, endpoint)
    except (LabelError, EvalError, ModelError) as exc:
        _fail(str(exc))
    output.write_text(json.dumps(result, indent=1) + "\n")
    typer.echo(summary(result))
    typer.echo(f"\nwritten to {output}")


@prox_app.command("train")
def prox_train(
    output: Annotated[str, typer.Option(help="Folder URL for model.json.gz and model_card.json.")],
    pairs: Annotated[list[str] | None, typer.Option(
        help="Pages and what people kept of them: URL#page_column,kept_column (Parquet or JSONL; repeatable). "
        "Default: the two shared sets (web_pages_readability, web_pages_scrapinghub).")] = None,
    name: Annotated[str | None, typer.Option(help="Model name for the card; default: the folder name.")] = None,
    rounds: Annotated[int, typer.Option(help="Boosting rounds of each LightGBM pass.")] = 150,
    learning_rate: Annotated[float, typer.Option(help="LightGBM learning rate.")] = 0.1,
    num_leaves: Annotated[int, typer.Option(help="Leaves per tree.")] = 31,
    folds: Annotated[int, typer.Option(help="Folds (whole sites) for the second pass's first-pass probabilities.")] = 5,
    validation: Annotated[float, typer.Option(help="Share of sites held out for the card's figures.")] = 0.2,
    threshold: Annotated[float, typer.Option(help="A line is kept at this content probability or above.")] = 0.5,
    min_doc_words: Annotated[int, typer.Option(help="drop_doc() below this many kept words.")] = 20,
    language: Annotated[list[str] | None, typer.Option(
        help="Only pairs whose kept text is in this language (ISO code; repeatable); default: any.")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="At most this many pairs per --pairs URL.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the site splits and of LightGBM.")] = 0,
    teacher_pages: Annotated[list[str] | None, typer.Option(
        help="Pages for a teacher model to label: URL#page_column (repeatable). The `teacher` writer on the "
        "config's llm section writes their programs; what they keep is the kept text.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Pipeline YAML whose llm section is the "
                                                "teacher (default: in-process llama.cpp).")] = None,
) -> None:
    """Train the learned ProX writer's line model (LightGBM) from labelled pages."""
    from tasks.ingest import InputError
    from tasks.llm.backends import LLMError
    from tasks.prox.training import PairsError, TrainParams, train_to_storage
    from tasks.quality.models import ModelError

    params = TrainParams(rounds=rounds, learning_rate=learning_rate, num_leaves=num_leaves, folds=folds,
                         validation_fraction=validation, threshold=threshold, min_doc_words=min_doc_words,
                         languages=tuple(language or ()), max_pairs=max_pairs, seed=seed)
    try:
        llm = load_config(config).export_secrets_to_env().llm if teacher_pages else None
        card = train_to_storage(pairs, output, params, name, teacher_pages=teacher_pages, llm=llm)
    except (PairsError, InputError, ModelError, ConfigError, LLMError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    val = card["validation"]
    bad = card["counts"]["bad"]
    typer.echo(f"model {card['model']}: {card['counts']['used']} of {card['counts']['pairs']} pairs used"
               + (f" (bad: {', '.join(f'{k} {v}' for k, v in bad.items())})" if bad else "")
               + (f"; held-out sites: content-line precision {val['precision']}, recall {val['recall']}, "
                  f"F1 {val['f1']}" if "f1" in val else f"; {val.get('note', '')}"))


@models_app.command("fetch")
def models_fetch() -> None:
    """Fetch the model files that are not Python packages (the lid.176 language-ID model)."""
    from tasks.quality.models import ModelError, lid_model_path

    try:
        typer.echo(f"language ID: {lid_model_path()}")
    except ModelError as exc:
        _fail(str(exc))


@metrics_app.command("serve")
def metrics_serve(
    root: Annotated[str, typer.Argument(help="Corpus root whose releases to export.")],
    port: Annotated[int, typer.Option(help="Port of the /metrics endpoint.")] = 9108,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
) -> None:
    """Serve the releases' metrics for Prometheus (dashboards in dashboards/grafana/)."""
    import time

    from prometheus_client import start_http_server

    from tasks.metrics import registry_for
    from tasks.storage import StorageSpec, endpoint_from_env

    start_http_server(port, addr=host, registry=registry_for(StorageSpec(root, endpoint_from_env()).open()))
    typer.echo(f"serving metrics of {root} at http://{host}:{port}/metrics", err=True)
    while True:
        time.sleep(3600)


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the pipeline YAML."""
    from tasks.config import config_json_schema

    typer.echo(json.dumps(config_json_schema(), indent=2))


@config_app.command("validate")
def config_validate(path: Path) -> None:
    """Validate a pipeline YAML file."""
    try:
        load_config(path)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(f"{path}: ok")


def main() -> None:
    """The `refinery` console entry. After the command and the interpreter's exit handlers
    (Prefect's log shipping among them) have run, the process ends without the C++ static
    destructors of the native libraries it loaded: one of them (seen after Parquet reads, about
    one exit in 30) aborts with "terminate called without an active exception", which would
    turn a finished command into exit code 134."""
    import atexit

    try:
        app(standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    atexit._run_exitfuncs()
    from tasks.timeline import mark

    mark("exit")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
