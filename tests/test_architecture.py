"""The layout a newcomer walks: the stage table of docs/architecture.md matches the registry,
imports follow the layering contracts, nothing imports another module's private names."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tasks import registry

ROOT = Path(__file__).resolve().parent.parent
TABLE = re.compile(r"<!-- stage-table:start -->\n(.*?)\n<!-- stage-table:end -->", re.S)


def test_the_architecture_pages_stage_table_is_the_registrys():
    page = (ROOT / "docs" / "architecture.md").read_text()
    found = TABLE.search(page)
    assert found, "docs/architecture.md lost its stage-table markers"
    assert found.group(1) == registry.stage_table(), (
        "docs/architecture.md's stage table is stale: paste the output of `python -m tasks.registry`")


def test_every_builtin_stage_has_a_row_and_a_config_section():
    from tasks.config import PipelineConfig

    rows = registry.stage_table().splitlines()[2:]
    assert [r.split("|")[1].strip(" `") for r in rows] == [s.name for s in registry.stages()]
    for st in registry.stages():
        assert st.config_key in PipelineConfig.model_fields, st.name


def test_every_builtin_stage_has_a_step_test_file():
    """Each stage of tasks/ has tests/unit/test_<stage>_step.py calling its step directly
    (docs/architecture.md, adding a stage: 3)."""
    builtin = [st.name for st in registry.stages() if (st.step or st.plan).__module__.startswith("tasks.")]
    assert len(builtin) >= 9
    missing = [n for n in builtin if not (ROOT / "tests" / "unit" / f"test_{n}_step.py").is_file()]
    assert not missing, f"stages without a step test file in tests/unit/: {missing}"
    # and the file really calls the step the registry runs (or its planner's step functions)
    idle = []
    for st in registry.stages():
        if st.name not in builtin:
            continue
        tree = ast.parse((ROOT / "tests" / "unit" / f"test_{st.name}_step.py").read_text())
        called = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                  for n in ast.walk(tree) if isinstance(n, ast.Call)}
        tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        step = st.step.__name__ if st.step else None
        # tests.builders.ingest_one is the ingest step as the flow calls it
        if not tests or (step is not None and step not in called) or (step is None and not any(
                name.endswith("_step") or name == "ingest_one" for name in called)):
            idle.append(st.name)
    assert not idle, f"step test files that call no step function: {idle}"


def _modules(*folders: str) -> list[Path]:
    return [p for f in folders for p in (ROOT / f).rglob("*.py")]


def test_no_module_imports_another_modules_private_names():
    """Within the project: a helper another module needs is public. (Outside it, one
    deliberate use: the fast tokenizer reads CPython's regex parser, ``re._parser``, to prove
    facts about spaCy's compiled patterns; it switches itself off when that fails.)"""
    project = ("tasks", "flows", "tests", "bench", "scripts")
    bad = []
    for path in _modules(*project):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] in project):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module} {private}")
    assert not bad, bad


def test_no_test_module_imports_another():
    bad = []
    for path in _modules("tests"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [
                a.name for a in node.names] if isinstance(node, ast.Import) else []
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                    if re.match(r"tests(\.\w+)*\.test_", n or "")]
    assert not bad, bad


def test_import_contracts_hold():
    """The layering contracts of pyproject.toml, as `lint-imports` checks them in CI."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed (it is in the test extra)"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_the_orchestration_contract_covers_every_module_of_tasks_but_tasks_parallel():
    """A new module of tasks/ is under the no-Prefect, no-Ray contract without anyone
    remembering to list it: only tasks.parallel and tasks.ray_local, the orchestration's modules
    there, are left out."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (orchestration,) = [c for c in contracts if c["type"] == "forbidden" and "ray" in c["forbidden_modules"]]
    orchestration_modules = {"tasks.parallel", "tasks.ray_local"}
    assert {"flows", "prefect", "prefect_ray", "ray"} | orchestration_modules <= set(orchestration["forbidden_modules"])
    children = {f"tasks.{p.stem if p.suffix == '.py' else p.name}" for p in (ROOT / "tasks").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert set(orchestration["source_modules"]) == children - orchestration_modules
    acyclic = [c for c in contracts if c["type"] == "acyclic_siblings"]
    assert acyclic and acyclic[0]["ancestors"] == ["tasks"]


def test_reading_a_pipeline_config_loads_no_stage_machinery():
    """`tasks.config` is the bottom of the house: the CLI, the Prefect form and every worker
    import it, so it must not pull compiled kernels or models in (a package `__init__` that
    re-exported decontamination's kernels once cost every `refinery` command a second)."""
    heavy = ("numba", "spacy", "datatrove", "ray", "prefect", "fasttext", "sklearn", "lightgbm", "llama_cpp")
    probe = f"import sys, tasks.config; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
