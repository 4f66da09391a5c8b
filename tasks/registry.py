"""The stage registry: every stage of a release is declared once, here or from its own package.

A :class:`Stage` names the stage, its kind, its config key, what it reads and writes, and how it
plans its work (one task per shard for a map stage, waves for a global one). The flow
(``flows/curate.py``) runs the configured stages in order; the ``final`` flag, the work table
each stage reads, the progress waves, the manifest's stage order and the tests' expected task
runs are all derived from these declarations. See docs/architecture.md ("Adding a stage").

This module is the bottom of the house with :mod:`tasks.config`: it imports no stage. The
built-in stages declare themselves in the modules listed in :data:`BUILTIN_MODULES`, which are
imported (by name) the first time the registry is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tasks.errors import StageOrderError

Kind = Literal["map", "global", "model"]

# The packages that declare the built-in stages (each calls :func:`register` on import).
BUILTIN_MODULES = (
    "tasks.ingest_stage",
    "tasks.dedup.declare",
    "tasks.quality.declare",
    "tasks.prox.declare",
    "tasks.leaner.declare",
    "tasks.extract.declare",
    "tasks.decontam.declare",
    "tasks.pii.declare",
)


class StageRun(Protocol):
    """What a stage's planner gets from the orchestration layer (``flows/runner.py``).

    ``ctx``: the run context (its ``feed`` set when the next stage asked for one); ``prev``:
    the work table this stage reads; ``final``: whether its last map step writes the release's
    documents; ``names``: the shards that made it through ingest; ``markers``: every step's
    markers so far, by step label."""

    ctx: Any
    prev: str
    final: bool
    shards: list[Any]
    names: list[str]
    markers: dict[str, list[dict[str, Any]]]
    failures: list[dict[str, Any]]
    logger: Any

    def map_tolerant(self, step: Callable[..., dict[str, Any]], calls: Sequence[tuple[str, tuple[Any, ...]]],
                     label: str, task_name: str | None = None, groups: Sequence[Sequence[int]] | None = None,
                     ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """As :meth:`map`, but the failures are returned (ingest tolerates unreadable input)."""
        ...

    def map(self, step: Callable[..., dict[str, Any]], calls: Sequence[tuple[str, tuple[Any, ...]]],
            label: str, task_name: str | None = None, groups: Sequence[Sequence[int]] | None = None,
            ) -> list[dict[str, Any]]:
        """Run ``step(*args)`` once per (shard, args) as one task each; stop the release on
        any failure; record and return the markers under ``label``. ``groups`` (lists of
        indices into ``calls``): one task run per group instead, each running its shards'
        steps in turn (markers and failures stay per shard)."""
        ...

    def workers(self) -> int:
        """How many tasks the run executes at once."""
        ...

    def with_model(self, run: Callable[[Any], Any]) -> Any:
        """Run ``run(actor)`` with the run's language-model actor started: ``actor`` is a
        ``tasks.llm.client.CompletionService`` (None without Ray: the step loads the model itself)."""
        ...


@dataclass(frozen=True)
class FeedSpec:
    """A map that runs inside the previous stage's step on the table it passes on (near dedup's
    signatures): ``fn(storage, ctx, shard, work) -> figures``, kept under ``key`` in that
    step's marker."""

    key: str
    fn: Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One stage, declared once.

    ``step``: for a map stage, the shard step ``step(ctx, shard, prev_stage, final[, actor])``;
    the default planner runs it once per shard (with the model actor when ``uses_model``).
    ``plan``: a planner of its own (global stages): ``plan(run: StageRun) -> None``.
    ``config_key``: the field of ``PipelineConfig`` with its settings (``None``: none); unless
    ``enabled`` says otherwise, the stage runs by default when that section's ``enabled`` is
    true. ``rank``: its place in the default order. ``outputs``: the labels of its map steps, in
    order, one funnel line each (default: its name); the last is the work table the next stage
    reads. ``requires``: stages that must run before it; ``right_after``: the stage it must
    follow directly. ``check``: raises before any work when the config cannot run."""

    name: str
    kind: Kind
    rank: int
    reads: str
    writes: str
    config_key: str | None = None
    step: Callable[..., dict[str, Any]] | None = None
    plan: Callable[[StageRun], None] | None = None
    enabled: Callable[[Any], bool] | None = None
    outputs: Callable[[Any], list[str]] | None = None
    waves: Callable[[Any], int] | None = None
    uses_model: Callable[[Any], bool] | None = None
    feed: FeedSpec | None = None
    requires: tuple[str, ...] = ()
    right_after: str | None = None
    check: Callable[[Any], None] | None = None
    after_publish: Callable[[Any], None] | None = None  # (ctx) once the release is committed
    # the manifest's section of this stage (under its name) from its markers: (ctx, markers) -> dict
    figures: Callable[[Any, list[dict[str, Any]]], dict[str, Any]] | None = None
    # the task runs a release's flow run records for this stage, by task name, from its manifest
    # and the number of shards that made it through ingest (default: one per shard)
    task_runs: Callable[[dict[str, Any], int, int], dict[str, int]] | None = None
    why: str = ""  # why it must come where `requires` / `right_after` put it (in the error)
    summary: str = ""

    def __post_init__(self) -> None:
        if (self.step is None) == (self.plan is None):
            raise ValueError(f"stage {self.name!r}: declare exactly one of step (a map stage) or plan")

    def is_enabled(self, config: Any) -> bool:
        if self.enabled is not None:
            return bool(self.enabled(config))
        if self.config_key is None:
            return False  # runs only when `stages` names it
        return bool(getattr(getattr(config, self.config_key), "enabled", True))

    def step_labels(self, config: Any) -> list[str]:
        return list(self.outputs(config)) if self.outputs is not None else [self.name]

    def output(self, config: Any) -> str:
        """The work table the next stage reads."""
        return self.step_labels(config)[-1]

    def wave_count(self, config: Any) -> int:
        return int(self.waves(config)) if self.waves is not None else 1

    def expected_task_runs(self, manifest: dict[str, Any], shards: int, ok: int) -> dict[str, int]:
        return self.task_runs(manifest, shards, ok) if self.task_runs is not None else {self.name: ok}

    def needs_model(self, config: Any) -> bool:
        return bool(self.uses_model(config)) if self.uses_model is not None else self.kind == "model"


_STAGES: dict[str, Stage] = {}
_loaded = False


def register(stage: Stage, replace: bool = False) -> Stage:
    """Add a stage to the registry (a plugin or a test may add its own)."""
    if stage.name in _STAGES and not replace and _STAGES[stage.name] is not stage:
        raise ValueError(f"stage {stage.name!r} is already registered")
    _STAGES[stage.name] = stage
    return stage


def unregister(name: str) -> None:
    _STAGES.pop(name, None)


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def stages() -> list[Stage]:
    """Every registered stage, in the default order."""
    _load_builtins()
    return sorted(_STAGES.values(), key=lambda s: (s.rank, s.name))


def get(name: str) -> Stage:
    _load_builtins()
    try:
        return _STAGES[name]
    except KeyError:
        raise StageOrderError(f"unknown stage {name!r} (known: {', '.join(s.name for s in stages())})") from None


def default_order(config: Any) -> list[str]:
    """Today's order of the stages the config enables (what `stages` means when it is empty)."""
    return [s.name for s in stages() if s.name == "ingest" or s.is_enabled(config)]


def check_order(names: Sequence[str], config: Any) -> None:
    """Refuse an order that cannot run, naming the conflict."""
    seen: set[str] = set()
    for n in names:
        get(n)
        if n in seen:
            raise StageOrderError(f"stage {n!r} is listed twice")
        seen.add(n)
    if not names or names[0] != "ingest":
        raise StageOrderError(f"ingest must come first (it reads the inputs); got {', '.join(names) or 'nothing'}")
    for i, n in enumerate(names):
        st = get(n)
        for need in st.requires:
            if need not in names[:i]:
                where = "after it" if need in names else "not at all"
                raise StageOrderError(f"{n} needs {need} to run before it{st.why}, but {need} runs {where}")
        if st.right_after is not None and (i == 0 or names[i - 1] != st.right_after):
            raise StageOrderError(f"{n} must come right after {st.right_after}{st.why}; it comes after "
                                  f"{names[i - 1] if i else 'nothing'}")


def order(config: Any) -> list[Stage]:
    """The stages this config runs, in order."""
    names = list(config.stages) if config.stages else default_order(config)
    check_order(names, config)
    return [get(n) for n in names]


def total_waves(config: Any) -> int:
    return sum(s.wave_count(config) for s in order(config))


def expected_steps(config: Any) -> list[str]:
    """The labels of the per-shard map steps that leave funnel lines, in run order."""
    return [label for s in order(config) for label in s.step_labels(config)]


def expected_task_runs(manifest: dict[str, Any], shards: int, failed: int = 0) -> dict[str, int]:
    """Task runs per task name that a release's flow run must have recorded: each stage of
    its manifest's `stages` says how many it made."""
    out: dict[str, int] = {}
    for name in manifest["stages"]:
        out.update(get(name).expected_task_runs(manifest, shards, shards - failed))
    # steps that ran as worker-sized groups of shards (tasks/grouping.py): one task run per group
    out.update({label: n for label, n in manifest.get("task_groups", {}).items() if label in out})
    return out


def stage_table() -> str:
    """The registered stages as a Markdown table (docs/architecture.md embeds it; a test keeps
    the page in step: ``python -m tasks.registry`` prints it)."""
    rows = ["| stage | kind | config key | reads | writes | what it does |", "|---|---|---|---|---|---|"]
    for s in stages():
        key = f"`{s.config_key}`" if s.config_key else "-"
        rows.append(f"| `{s.name}` | {s.kind} | {key} | {s.reads} | {s.writes} | {s.summary} |")
    return "\n".join(rows)


if __name__ == "__main__":  # run as a script this module is `__main__`: ask the imported registry
    from tasks import registry

    print(registry.stage_table())
