"""The package's shape: subpackages in layers whose imports point down, no import cycle, and DVC stages that depend
on the subpackages they run (so that editing a report module reruns the report alone)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PACKAGE = REPO / "src" / "catdog"
# Lowest first: a subpackage imports only those before it (and itself). `report`, `predict` and `publish` are on top,
# beside each other; `team` stands apart and imports only `common`.
LAYERS = (
    "common",
    "settings",
    "data",
    "audit",
    "tracking",
    "serve",
    "train",
    "compare",
    ("report", "predict", "publish", "search"),
)
APART = {"team": {"common"}}
STAGES = ("download", "split", "audit", "train", "compare", "report")


def rank(subpackage: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if subpackage == layer or subpackage in layer)


def module_path(name: str) -> Path | None:
    """The file of module `catdog.x.y` (a package's `__init__.py`), or None where `name` is not a module."""
    base = REPO / "src" / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO / "src").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The catdog modules `path` imports anywhere in it (lazy imports in functions too), with the packages whose
    `__init__` each import runs."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("catdog"):
            for name in (node.module, *(f"{node.module}.{a.name}" for a in node.names)):
                parts = name.split(".")
                found |= {".".join(parts[:k]) for k in range(1, len(parts) + 1) if module_path(".".join(parts[:k]))}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_every_module_is_in_a_subpackage_with_a_docstring() -> None:
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"], "modules belong in subpackages"
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == {s for layer in LAYERS for s in ((layer,) if isinstance(layer, str) else layer)} | set(APART)
    for init in PACKAGE.glob("*/__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, imported in graph().items():
        here = module.split(".")[1] if module.count(".") else None
        for target in imported:
            there = target.split(".")[1] if target.count(".") else None
            if here is None or there is None or there == here:
                continue
            allowed = there in APART[here] if here in APART else there not in APART and rank(there) < rank(here)
            if not allowed:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_no_module_imports_itself_through_others() -> None:
    # The package's __init__ runs before every catdog import; a cycle through it is Python's order, not ours.
    edges = {m: imported - {"catdog"} for m, imported in graph().items() if m != "catdog"}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in edges.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = [(a, b) for a, b in itertools.permutations(edges, 2) if b in edges[a] and reaches(b, a)]
    assert not cycles, cycles


def code_run_by(script: Path) -> set[Path]:
    """Every file of catdog that `script` runs: what it imports, transitively, and the package's __init__."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imports(todo.pop()):
            path = module_path(name)
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


def code_deps(stage: str) -> list[Path]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return [REPO / d for d in spec.get("do", spec)["deps"] if d.startswith("src/")]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_the_code_it_runs_by_subpackage(stage: str) -> None:
    """Every file the stage runs is under a dep; every dep holds something it runs; a dep is a subpackage's folder,
    except in `data`, whose download and split code the other stages do not run (a change to how training reads
    images must not fetch the data again)."""
    script = REPO / "src" / f"{stage}.py"
    run = code_run_by(script) | {script}
    deps = code_deps(stage)
    uncovered = [p for p in run if not any(p == d or d in p.parents for d in deps)]
    assert not uncovered, f"{stage} runs {sorted(map(str, uncovered))} without depending on it"
    idle = [d for d in deps if not any(p == d or d in p.parents for p in run)]
    assert not idle, f"{stage} depends on {sorted(map(str, idle))}, which it does not run"
    for dep in deps:
        assert dep.is_dir() or dep == script or dep.parent.name == "data" or dep == PACKAGE / "__init__.py", dep


@pytest.mark.parametrize(("edited", "untouched"), [("report", ("train", "compare")), ("compare", ("train",))])
def test_editing_a_later_stage_leaves_earlier_stages_up_to_date(edited: str, untouched: tuple[str, ...]) -> None:
    for stage in untouched:
        for module in (PACKAGE / edited).glob("*.py"):
            assert not any(module == d or d in module.parents for d in code_deps(stage)), (stage, module)


def test_no_module_finds_the_project_from_where_it_is_installed() -> None:
    """params.yaml and conf/ come from the project folder (catdog.settings.project: the working directory up, or
    $CATDOG_PROJECT), never from the package's own path, which an installed wheel puts in site-packages."""
    found = [
        f"{p.relative_to(REPO)}:{n}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "__file__" in line and ".parent" in line
    ]
    assert not found, found


def test_the_project_is_found_from_the_working_directory_else_the_setting(tmp_path: Path, monkeypatch) -> None:
    from catdog.settings.checks import ConfigError
    from catdog.settings.project import PROJECT_ENV, project_dir

    (tmp_path / "project" / "src").mkdir(parents=True)
    (tmp_path / "project" / "params.yaml").write_text("study: {}\n")
    assert project_dir(tmp_path / "project" / "src") == tmp_path / "project"
    monkeypatch.setenv(PROJECT_ENV, str(tmp_path / "project"))
    assert project_dir(tmp_path) == tmp_path / "project"
    monkeypatch.delenv(PROJECT_ENV)
    with pytest.raises(ConfigError, match=rf"no params.yaml in {tmp_path} or above it; .* set {PROJECT_ENV}"):
        project_dir(tmp_path)
