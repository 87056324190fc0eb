"""dvc.yaml's code deps cover what each stage imports, so DVC reruns a stage when its code changes.

Each stage's command is ``fdpose <command> ...``; pipeline/cli.py's ``COMMANDS`` names the module that
runs it. Its import closure inside ``pipeline/`` is computed here from the source (``ast``): every
``import``/``from ... import`` anywhere in a module (function-level ones included), the packages above
each module (importing ``pipeline.formats.coco`` runs ``pipeline/__init__.py`` and
``pipeline/formats/__init__.py``), and ``from package import name`` where ``name`` is a submodule.

One edge is conditional: ``pipeline/__init__.py`` registers the ultralytics integration
(``pipeline.nn.ultralytics``) only once ultralytics itself is imported, from an import nested in a
function or an ``if``. Those nested imports of ``pipeline/__init__.py`` are followed only for closures
that import ultralytics; so a stage that never touches ultralytics (convert, augment) does not depend
on ``pipeline/nn`` and does not rerun when the model code changes. pipeline/cli.py, the dispatcher
that maps a command name to its module, is not part of any closure.
"""

from __future__ import annotations

import ast
import shlex
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

from pipeline.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline"
DVC_YAML = REPO / "dvc.yaml"


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` inside pipeline/ (package -> its __init__.py), if any."""
    parts = name.split(".")
    if parts[0] != "pipeline":
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``path``)."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


def _nested_imports(tree: ast.Module) -> set[int]:
    """ids of the import nodes not at a module's top level (inside a def, class, if, try...)."""
    top = {id(statement) for statement in tree.body if isinstance(statement, (ast.Import, ast.ImportFrom))}
    return {id(node) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top}


@cache
def imports(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(modules ``path`` imports, the subset imported only from nested code), pipeline/ or not."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nested_ids = _nested_imports(tree)
    found: set[str] = set()
    nested: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, path)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names
                              if module_file(f"{base}.{alias.name}") is not None]
        else:
            continue
        found.update(names)
        if id(node) in nested_ids:
            nested.update(names)
    return frozenset(found), frozenset(nested)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def closure(start: str) -> tuple[set[Path], set[str]]:
    """(the pipeline/ files importing ``start`` runs, every module name they import)."""
    files: set[Path] = set()
    external: set[str] = set()
    pending = _with_parents(start)
    deferred: set[str] = set()  # the package's nested (ultralytics-triggered) imports
    root_init = PACKAGE / "__init__.py"
    while True:
        while pending:
            for name in _with_parents(pending.pop()):
                path = module_file(name)
                if path is None or path in files:
                    continue
                files.add(path)
                found, nested = imports(path)
                external.update(found)
                chosen = found - nested if path == root_init else found
                deferred.update(nested if path == root_init else ())
                pending.extend(chosen)
        if deferred and any(name.split(".")[0] == "ultralytics" for name in external):
            pending, deferred = list(deferred), set()
            continue
        return files, external


def stages() -> dict[str, dict]:
    return yaml.safe_load(DVC_YAML.read_text(encoding="utf-8"))["stages"]


def stage_module(stage: dict) -> str:
    """The module that runs a stage's ``fdpose <command>``."""
    words = shlex.split(stage["cmd"])
    assert words[0] == "fdpose", stage["cmd"]
    return COMMANDS[words[1]][0].split(":")[0]


def covered(path: Path, deps: list[str]) -> bool:
    """Whether a dep (a file, or a folder covering everything below it) covers ``path``."""
    relative = PurePosixPath(path.relative_to(REPO).as_posix())
    return any(relative == PurePosixPath(dep) or PurePosixPath(dep) in relative.parents
               for dep in map(lambda d: d.rstrip("/"), deps))


STAGE_NAMES = list(stages())


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_deps_cover_its_import_closure(name):
    stage = stages()[name]
    files, _ = closure(stage_module(stage))
    missing = sorted(path.relative_to(REPO).as_posix() for path in files if not covered(path, stage["deps"]))
    assert not missing, f"dvc.yaml stage {name!r} imports these but does not depend on them: {missing}"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_code_deps_exist_and_are_used(name):
    """Every declared pipeline/ dep exists and holds a module of the stage's closure (no stale entry)."""
    stage = stages()[name]
    files, _ = closure(stage_module(stage))
    for dep in stage["deps"]:
        if dep.startswith("pipeline"):
            assert (REPO / dep).exists(), f"stage {name!r}: dep {dep} does not exist"
            assert any(covered(path, [dep]) for path in files), f"stage {name!r}: {dep} is not imported"


@pytest.mark.parametrize("name", ["convert", "augment"])
def test_data_stages_do_not_rerun_for_model_code(name):
    """Convert and augment never import ultralytics, so a change under pipeline/nn leaves the datasets."""
    stage = stages()[name]
    files, external = closure(stage_module(stage))
    assert not any(module.split(".")[0] in {"ultralytics", "torch"} for module in external)
    assert not any(path.is_relative_to(PACKAGE / "nn") for path in files)
    model_code = list((PACKAGE / "nn").rglob("*.py"))
    assert model_code and not any(covered(path, stage["deps"]) for path in model_code)


def test_closure_follows_nested_and_package_imports():
    """The analysis itself: function-level imports, parent packages and the ultralytics hook."""
    files, _ = closure("pipeline.convert")
    names = {module_name(path) for path in files}
    # convert imports the Label Studio reader inside a function, and pipeline.labelstudio runs its __init__
    assert {"pipeline", "pipeline.labelstudio", "pipeline.labelstudio.reader", "pipeline.convert"} <= names
    assert "pipeline.nn.ultralytics" not in names
    files, _ = closure("pipeline.train")
    assert "pipeline.nn.ultralytics" in {module_name(path) for path in files}
