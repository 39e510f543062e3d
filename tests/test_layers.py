"""The floor plan, as a specification: the folders are layers and each imports only downward.

From the bottom: `utils/` (tools), `models/` (networks, objectives, their registries),
`boostnet/` (data, training, evaluation, runs, reporting, benchmarks; `adaptive_inference.py` is
its budgeted-batch protocol, kept at the top level where users of the original code look), and
the programs (`args.py`, `train_*.py`, `eval_*.py`, `op_counter.py`, `scripts/`). Only the programs
read the command line. `utils/plots.py` is the one program inside `utils/`: the command
`python -m utils.plots`, kept where users run it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROGRAMS_IN_LIBRARY = {"utils.plots"}
LIBRARY_ROOT_MODULES = {"adaptive_inference"}
LAYERS = {"utils": 0, "models": 1, "boostnet": 2, "adaptive_inference": 2}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    """Every module of the three library folders and the protocol module, by dotted name."""
    paths = [path for folder in ("utils", "models", "boostnet") for path in (ROOT / folder).rglob("*.py")]
    modules = {module_name(path): path for path in paths}
    modules.update({name: ROOT / f"{name}.py" for name in LIBRARY_ROOT_MODULES})
    return {name: path for name, path in modules.items() if name not in PROGRAMS_IN_LIBRARY}


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The modules `path` imports (anywhere in it, or at module level only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            package = module_name(path).rsplit(".", 1)[0]
            found.add(f"{package}.{node.module}" if node.module else package)
    return found


def layer(module: str) -> int | None:
    return LAYERS.get(module.split(".")[0])


MODULES = library_modules()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_library_module_reads_the_command_line(name):
    assert not imports(MODULES[name]) & {"args", "argparse"} or name == "utils.cli"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_library_module_imports_only_its_layer_or_below(name):
    upward = sorted(
        other
        for other in imports(MODULES[name])
        if other.split(".")[0]
        in (
            "args",
            "train_cifar100",
            "train_imagenet",
            "eval_cifar100",
            "eval_imagenet",
            "op_counter",
            "scripts",
        )
        or (layer(other) is not None and layer(other) > layer(name))
    )
    assert upward == []


def test_models_know_no_dataset():
    assert not any(
        "boostnet" in other
        for name in MODULES
        if name.startswith("models")
        for other in imports(MODULES[name])
    )


def test_no_import_cycle_among_module_level_imports():
    graph = {
        name: {other for other in imports(path, top_level_only=True) if other in MODULES}
        for name, path in MODULES.items()
    }
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join(path + (name,))
        if name not in done:
            for other in graph[name]:
                visit(other, path + (name,))
            done.add(name)

    for name in graph:
        visit(name, ())
