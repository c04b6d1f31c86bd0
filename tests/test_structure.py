"""The shape of the code, as issue 15 set it: stages only orchestrate (no stage imports another, bench imports
none), one module owns the run folder's layout, and no function in ``src/`` runs over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fishtune"
STAGES = SRC / "stages"
# The run folder's own names: only fishtune/layout.py may join them onto a path.
RUN_NAMES = {"clips", "tokens", "packed", "train", "checkpoints", "logs", "samples", "report", "publish", "raw"}
RUN_FILES = {"manifest.jsonl", "status.json", "state.json", "summary.json", "lora.pth", "metrics.jsonl", "split.json"}


def _trees(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _stage_modules() -> set[str]:
    return {f"fishtune.stages.{p.stem}" for p in STAGES.glob("*.py") if p.stem != "__init__"}


def test_no_stage_imports_another_and_bench_imports_none():
    stages = _stage_modules()
    bad = []
    for path, tree in _trees(STAGES):
        own = f"fishtune.stages.{path.stem}"
        bad += [f"{path.name} imports {m}" for m in _imported(tree) & stages if m != own]
    for path, tree in _trees(ROOT / "bench"):
        bad += [f"bench/{path.name} imports {m}" for m in _imported(tree) & (stages | {"fishtune.stages"})]
    assert not bad, bad


def _joins(tree: ast.AST):
    """``(line, name, base)``: string constants joined onto a path with ``/``; ``base`` is the variable the
    chain of joins starts from (None for anything else)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right, left = node.right, node.left
            while isinstance(left, ast.BinOp) and isinstance(left.op, ast.Div):
                left = left.left
            if isinstance(right, ast.Constant) and isinstance(right.value, str):
                yield node.lineno, right.value, left.id if isinstance(left, ast.Name) else None


def test_only_the_layout_joins_run_folder_names():
    bad = [
        f"{path.relative_to(ROOT)}:{line} joins {name!r}"
        for path, tree in _trees(SRC)
        if path.relative_to(SRC).as_posix() not in ("layout.py", "rehearsal.py")  # the rehearsal's folder is no run
        for line, name, base in _joins(tree)
        if name in RUN_NAMES | RUN_FILES
        and not (path.name == "publish.py" and base == "tmp")  # publish lays out the Hub repository, not the run
    ]
    assert not bad, bad


@pytest.mark.parametrize("limit", [80])
def test_no_function_over_the_limit(limit):
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _trees(SRC)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]
    assert not long, long


def test_the_checks_see_what_they_look_for(tmp_path):
    """The helpers above find a stage import, a join and a long function when there is one."""
    code = "from fishtune.stages.train import run\np = run_dir / 'clips'\n" + "def f():\n" + "    x = 1\n" * 90
    tree = ast.parse(code)
    assert "fishtune.stages.train" in _imported(tree) & _stage_modules()
    assert (2, "clips", "run_dir") in set(_joins(tree))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert fn.end_lineno - fn.lineno + 1 == 91
