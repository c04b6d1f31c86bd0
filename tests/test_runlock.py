"""One writer per run directory, with two real processes: a second writer fails at once naming the running stage
and its pid; a read-only stage still runs; after kill -9 of the holder the lock is gone (no stale lock).

The first process is frozen with SIGSTOP while it holds the lock (inside ``train``), so the test does not race
the training loop; a stopped process keeps its locks like a running one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import copy_run, stage_cmd
from fishtune.layout import RunLayout

LOCK_FILE = RunLayout.at("run").lock.name

pytestmark = pytest.mark.slow


def _wait_for_stage(run, proc, stage: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        try:
            if json.loads((run / LOCK_FILE).read_text()).get("stage") == stage:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{stage} did not start within {timeout} s")


def _run(cmd, timeout=120) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - started


def test_second_writer_fails_at_once_reader_runs_and_kill_9_leaves_no_stale_lock(
    tmp_path, packed_run, finnish_data, tiny_model
):
    run = copy_run(packed_run, tmp_path / "runs" / "lock")
    steps = ["train.max_steps=4", "train.val_every=2", "train.ckpt_every=2"]
    first = subprocess.Popen(
        stage_cmd(run, finnish_data, tiny_model, "train", *steps),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_stage(run, first, "train")
        os.kill(first.pid, signal.SIGSTOP)
        before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE}
        for stage in ("train", "prepare", "pack,train"):
            second, seconds = _run(stage_cmd(run, finnish_data, tiny_model, stage, *steps))
            lines = [x for x in second.stderr.splitlines() if x.startswith("error:")]
            assert second.returncode == 1 and len(lines) == 1, second.stderr[-2000:]
            assert f"is in use by stage train (pid {first.pid} " in lines[0], lines[0]
            assert seconds < 15, seconds  # at once: no model loaded, nothing waited for
        after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE}
        assert after == before, "the refused writers changed nothing (status.json included)"
        # a read-only stage runs alongside the writer
        doctor, _ = _run(stage_cmd(run, finnish_data, tiny_model, "doctor"))
        assert "in use by" not in doctor.stderr and doctor.returncode == 0, doctor.stderr[-2000:]
    finally:
        os.kill(first.pid, signal.SIGKILL)  # kill -9 while it holds the lock (a stopped process dies too)
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert (run / LOCK_FILE).exists()  # the file stays; the lock went with the process
    again, _ = _run(stage_cmd(run, finnish_data, tiny_model, "train", *steps), timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / "train" / "lora.pth").is_file()
