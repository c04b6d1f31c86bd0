"""SIGTERM to the container's PID 1 (what `docker stop` and Kubernetes send) stops a stage as cleanly as SIGINT:
exit 130, status.json "interrupted", and a rerun resumes from the last checkpoint.

The kernel drops a signal sent to a PID namespace's init process unless that process handles it (SIGKILL aside),
so a test outside a PID namespace cannot show this. Here the entrypoint really is PID 1 of a new PID namespace
(``unshare --pid --fork``; unprivileged: ``--user --map-root-user``), and the signal comes from the parent
namespace, as the container runtime sends it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_run, stage_cmd


def _unshare() -> list[str]:
    for prefix in (
        ["unshare", "--pid", "--fork", "--mount-proc"],
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"],
    ):
        try:
            p = subprocess.run([*prefix, "sh", "-c", "echo $$"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.returncode == 0 and p.stdout.strip() == "1":
            return prefix
    pytest.skip("cannot make a PID namespace here (unshare --pid --fork, with or without --user)")


def _init_of(unshare_pid: int, timeout: float = 30) -> int:
    """The host pid of the namespace's PID 1: unshare's only child."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError("unshare started no child")


def _ns_pid(pid: int) -> list[int]:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("NSpid:"))
    return [int(v) for v in line.split()[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_pid_1_ends_train_with_130_and_resumes(tmp_path, packed_run, finnish_data, tiny_model, sig):
    prefix = _unshare()
    run = copy_run(packed_run, tmp_path / "runs" / "pid1")
    extra = ["train.max_steps=100000", "train.log_every=1", "train.val_every=1000", "train.ckpt_every=1"]
    proc = subprocess.Popen(
        [*prefix, *stage_cmd(run, finnish_data, tiny_model, "train", *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        init = _init_of(proc.pid)
        assert _ns_pid(init)[-1] == 1  # the entrypoint is PID 1 in its namespace
        seen, deadline = [], time.time() + 300
        while time.time() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if "step 3/" in line or (not line and proc.poll() is not None):
                break
        assert any("step 3/" in x for x in seen), "".join(seen)[-3000:]
        started = time.monotonic()
        os.kill(init, sig)  # from the parent namespace, as the container runtime does
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    assert time.monotonic() - started < 60
    assert f"error: interrupted by {sig.name}; rerun the same command to resume" in out
    doc = json.loads((run / "status.json").read_text())
    assert doc["state"] == "interrupted" and doc["stages"]["train"]["state"] == "interrupted"
    assert list(run.rglob("step_*.ckpt")), "train.ckpt_every=1 should have left checkpoints"
    # the rerun (same run, a reachable end) resumes from the newest checkpoint
    p = subprocess.run(
        stage_cmd(run, finnish_data, tiny_model, "train", *extra[1:], "train.max_steps=6"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from" in (run / "logs" / "train.log").read_text()


def test_control_pid_1_without_a_handler_ignores_sigterm():
    """Why the test above needs a PID namespace: a plain Python as PID 1 does not die of SIGTERM."""
    proc = subprocess.Popen([*_unshare(), sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        init = _init_of(proc.pid)
        time.sleep(0.5)
        os.kill(init, signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None and Path(f"/proc/{init}").exists()  # still running: the signal was dropped
        os.kill(init, signal.SIGINT)  # Python's own SIGINT handler: this one arrives
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
