"""`make demo`: the embedded default's outputs land in runs/demo itself (not runs/demo/runs/demo)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def _demo(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "fishtune.demo", "--run", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # runs prepare in a subprocess
def test_demo_outputs_land_in_the_run_directory_itself(tmp_path, finnish_data, tiny_model):
    inputs = tmp_path / "build" / "demo"
    shutil.copytree(finnish_data, inputs / "data")
    shutil.copytree(tiny_model, inputs / "model")
    proc = _demo(tmp_path, "--stage", "prepare")  # the defaults: --out runs/demo --inputs build/demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "demo"
    status = json.loads((run / "status.json").read_text())
    assert (status["run"], status["run_dir"]) == ("demo", "runs/demo")
    assert status["stages"]["prepare"]["state"] == "done"
    assert len((run / "clips" / "manifest.jsonl").read_text().splitlines()) == 12
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["demo"]
    assert not (run / "runs").exists() and not (run / "model").exists()  # merge's model/ is the run's own
    assert "see runs/demo/" in proc.stdout


def test_demo_refuses_the_old_nested_layout(tmp_path):
    (tmp_path / "runs" / "demo" / "runs" / "demo").mkdir(parents=True)
    proc = _demo(tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: runs/demo holds an older demo (its inputs and runs/ inside the run directory). "
        "Fix: remove it (rm -rf runs/demo) and run make demo again"
    ]
    assert not (tmp_path / "build").exists()


def test_make_demo_runs_the_demo_into_runs_demo():
    dry = subprocess.run(["make", "-n", "--no-print-directory", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "-m fishtune.demo --run --out runs/demo --inputs build/demo" in dry.stdout
