"""Exit codes and errors (issue 14): SIGTERM and SIGINT end every stage with 130 "interrupted"; errors before a
stage's log exists are one line; RUN_NAME stays inside the runs root; a killed run's status.json says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENTRYPOINT, TINY, copy_run, stage_cmd
from fishtune import status


def _start(cmd: list[str], run: Path, wait_for: str, timeout: float = 300) -> subprocess.Popen:
    """Start ``cmd`` and return once ``wait_for`` appears in the stage's output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, seen = time.time() + timeout, []
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if wait_for in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"{wait_for!r} never came:\n{''.join(seen)[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "sig", "wait_for"),
    [
        ("train", signal.SIGTERM, "step 2/"),
        ("train", signal.SIGINT, "step 2/"),
        ("extract", signal.SIGTERM, "stage extract: starting"),
    ],
    ids=["train-SIGTERM", "train-SIGINT", "extract-SIGTERM"],
)
def test_signals_end_a_stage_with_130_interrupted(tmp_path, packed_run, finnish_data, tiny_model, stage, sig, wait_for):
    run = copy_run(packed_run, tmp_path / "runs" / "sig", skip=("train", "model", "samples", "tokens"))
    extra = ["train.max_steps=100000", "train.log_every=1", "train.val_every=1000"] if stage == "train" else []
    proc = _start(stage_cmd(run, finnish_data, tiny_model, stage, *extra), run, wait_for)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert f"error: interrupted by {sig.name}; rerun the same command to resume" in out
    doc = json.loads((run / "status.json").read_text())
    assert doc["state"] == "interrupted" and doc["stages"][stage]["state"] == "interrupted"


@pytest.mark.slow
def test_status_json_after_kill_9_says_killed(tmp_path, packed_run, finnish_data, tiny_model):
    run = copy_run(packed_run, tmp_path / "runs" / "k9")
    proc = _start(
        stage_cmd(run, finnish_data, tiny_model, "train", "train.max_steps=100000", "train.log_every=1"), run, "step 2/"
    )
    proc.kill()
    proc.wait()
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # nobody could write it
    doc = status.read(run)  # a reader sees the process is gone
    assert doc["state"] == "killed" and doc["stages"]["train"]["state"] == "killed"
    p = subprocess.run([sys.executable, "-m", "fishtune.status", str(run)], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["state"] == "killed"
    # the next command on the run records it too
    p = subprocess.run(stage_cmd(run, finnish_data, tiny_model, "pack"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads((run / "status.json").read_text())
    assert doc["stages"]["train"]["state"] == "killed" and "ended without finishing" in doc["stages"]["train"]["error"]


def _entry(env: dict, *args: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    full.pop("STAGE", None)
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args], env=full, capture_output=True, text=True, timeout=300
    )


def test_unwritable_runs_root_or_logs_is_one_line(tmp_path, finnish_data, tiny_model):
    base = {
        "FISHTUNE_DATA": str(finnish_data),
        "FISHTUNE_MODEL": str(tiny_model),
        "RUN_NAME": "r",
        "FISHTUNE_CACHE": str(tmp_path / "cache"),
    }
    # /sys refuses new folders even to root: a runs root nobody can write
    p = _entry({**base, "FISHTUNE_RUNS": "/sys/fishtune-runs"}, "doctor", *TINY)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "cannot write the log of stage doctor" in p.stderr
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "logs").write_text("a file where the logs folder should be")
    p = _entry({**base, "FISHTUNE_RUNS": str(tmp_path / "runs")}, "doctor", *TINY)
    assert p.returncode == 1 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert f"{run / 'logs'}" in p.stderr and "FISHTUNE_RUNS" in p.stderr


@pytest.mark.parametrize("name", ["../../escaped", "", "..", "a/b"])
def test_run_name_stays_inside_the_runs_root(tmp_path, finnish_data, tiny_model, name):
    runs = tmp_path / "deep" / "er" / "runs"
    runs.mkdir(parents=True)
    env = {
        "FISHTUNE_DATA": str(finnish_data),
        "FISHTUNE_MODEL": str(tiny_model),
        "RUN_NAME": name,
        "FISHTUNE_RUNS": str(runs),
        "FISHTUNE_CACHE": str(tmp_path / "cache"),
    }
    p = _entry(env, "doctor", *TINY)
    assert p.returncode == 2 and "is not a plain folder name" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert sorted(str(q.relative_to(tmp_path)) for q in tmp_path.rglob("*")) == ["deep", "deep/er", "deep/er/runs"]


def _break(model: Path, how: str) -> str:
    """Damage a copy of the tiny model one way; returns what doctor must name."""
    if how == "truncated codec":
        data = (model / "codec.pth").read_bytes()
        (model / "codec.pth").write_bytes(data[: len(data) // 2])
        return "codec.pth"
    if how == "corrupt model.pth":
        (model / "model.pth").write_bytes(os.urandom((model / "model.pth").stat().st_size))
        return "cannot load weights"
    if how == "shape mismatch":
        conf = json.loads((model / "config.json").read_text())
        conf["intermediate_size"] *= 2
        (model / "config.json").write_text(json.dumps(conf))
        return "shape mismatch"
    if how == "bad codec config":
        text = (model / "codec_config.yaml").read_text()
        (model / "codec_config.yaml").write_text(text.replace("encoder_dim: 8", "encoder_dim: 16"))
        return "codec"
    sums = "".join(f"{'0' * 64}  {n}\n" for n in ("config.json",))  # a file that changed after fetch
    (model / "SHA256SUMS").write_text(sums)
    return "config.json does not match its sha256"


@pytest.mark.slow
@pytest.mark.parametrize(
    "how", ["truncated codec", "corrupt model.pth", "shape mismatch", "bad codec config", "SHA256SUMS mismatch"]
)
def test_doctor_loads_the_weights_and_checks_the_sums(tmp_path, finnish_data, tiny_model, how):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    says = _break(model, how)
    run = tmp_path / "runs" / "d"
    p = subprocess.run(stage_cmd(run, finnish_data, model, "doctor"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "preflight check(s) failed" in p.stderr and says in p.stderr, p.stdout + p.stderr
    assert "all checks passed" not in p.stdout


@pytest.mark.slow
def test_doctor_passes_a_good_model_with_its_sums(tmp_path, finnish_data, tiny_model):
    import hashlib
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    names = ("model.pth", "codec.pth", "config.json")
    (model / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256((model / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    )
    run = tmp_path / "runs" / "d"
    p = subprocess.run(stage_cmd(run, finnish_data, model, "doctor"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    checks = {c["check"]: c for c in json.loads((run / "doctor.json").read_text())["checks"]}
    assert checks["SHA256SUMS"]["status"] == "ok" and checks["SHA256SUMS"]["detail"].startswith("3 files match")
    assert checks["model weights"] == {
        "check": "model weights",
        "status": "ok",
        "detail": "model.pth loads and matches its config",
    }
