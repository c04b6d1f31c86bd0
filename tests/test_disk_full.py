"""A full disk in every writing stage: one clear line, earlier outputs intact, and the rerun (with space again)
finishes. Each stage runs in a real process on a small tmpfs (root only: CI runs as root) holding the run
directory, with a filler file leaving a few KiB free; "space again" is the same tmpfs remounted bigger.

(The checkpoint save during training has its own test in test_faults.py: test_disk_full_during_checkpoint_save.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import HUB_TOKEN, copy_run, run_inprocess, stage_cmd

pytestmark = pytest.mark.slow


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a real full disk); CI runs as root")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = []

    def mount(size: int) -> Path:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        assert p.returncode == 0, p.stderr.decode()
        mounted.append(where)
        return where

    yield mount
    for m in mounted:
        subprocess.run(["umount", str(m)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Leave about ``leave`` bytes free on ``disk``."""
    free = shutil.disk_usage(disk).free
    if free > leave:
        with open(disk / "filler", "wb") as fh:
            fh.truncate(0)
            fh.write(b"\0" * (free - leave))


def _snapshot(run: Path, skip: tuple[str, ...]) -> dict[str, bytes]:
    return {
        p.relative_to(run).as_posix(): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and not p.relative_to(run).as_posix().startswith(skip)
    }


# stage, what the stage writes (excluded from "earlier outputs intact"), the run it starts from, extra overrides
CASES = [
    ("prepare", ("clips", "logs", "status.json", "state.json", ".fishtune.lock"), "empty", []),
    ("extract", ("tokens", "logs", "status.json", "state.json", ".fishtune.lock"), "prepared", []),
    ("pack", ("packed", "logs", "status.json", "state.json", ".fishtune.lock"), "extracted", []),
    ("merge", ("model", ".model.", "logs", "status.json", "state.json", ".fishtune.lock"), "trained", []),
    ("synthesize", ("samples", ".samples.", "logs", "status.json", "state.json", ".fishtune.lock"), "trained",
     ["synthesize.model=lora"]),
    ("evaluate", ("report", ".report.", "logs", "status.json", "state.json", ".fishtune.lock"), "trained", []),
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, packed_run, finnish_data, tiny_model) -> Path:
    run = copy_run(packed_run, tmp_path_factory.mktemp("df-trained") / "runs" / "t")
    steps = ["train.max_steps=4", "train.ckpt_every=2", "train.val_every=2"]
    assert run_inprocess(run, finnish_data, tiny_model, "train", *steps) == 0
    return run


def _source(kind: str, packed_run: Path, trained: Path, dst: Path) -> Path:
    if kind == "empty":
        dst.mkdir(parents=True)
        return dst
    if kind == "trained":
        return copy_run(trained, dst, skip=())
    run = copy_run(packed_run, dst)
    drop = {"prepared": ("tokens", "packed"), "extracted": ("packed",)}[kind]
    for name in drop:
        shutil.rmtree(run / name)
    return run


@pytest.mark.parametrize(("stage", "writes", "kind", "extra"), CASES, ids=[c[0] for c in CASES])
def test_disk_full_is_one_line_keeps_earlier_outputs_and_rerun_finishes(
    tmpfs, tmp_path, packed_run, trained, finnish_data, tiny_model, stage, writes, kind, extra
):
    disk = tmpfs(64 * 2**20)
    run = _source(kind, packed_run, trained, disk / "runs" / "r")
    before = _snapshot(run, writes)
    _fill(disk, (8 if stage == "pack" else 48) * 1024)  # pack's files are small
    cmd = stage_cmd(run, finnish_data, tiny_model, stage, *extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert p.returncode == 1 and len(lines) == 1, p.stderr[-3000:]
    assert "no space left on the device" in lines[0] and "rerun the same command" in lines[0], lines[0]
    assert "Traceback" not in p.stderr and "please report it" not in p.stderr
    assert _snapshot(run, writes) == before, "earlier outputs changed"
    (disk / "filler").unlink()  # space again
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]


def test_disk_full_while_publish_assembles_is_one_line_and_rerun_uploads(
    tmpfs, tmp_path, trained, finnish_data, tiny_model, fake_hub
):
    disk = tmpfs(64 * 2**20)
    run = copy_run(trained, disk / "runs" / "r", skip=())
    assert run_inprocess(run, finnish_data, tiny_model, "merge") == 0
    before = _snapshot(run, ("publish", ".publish.", "logs", "status.json", "state.json", ".fishtune.lock"))
    _fill(disk, 48 * 1024)  # the staged adapter (~120 KiB) does not fit; the model files are hard links
    env = {**os.environ, "HF_TOKEN": HUB_TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = stage_cmd(run, finnish_data, tiny_model, "publish", "publish.repo_id=me/full", f"hub.endpoint={fake_hub.url}")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert p.returncode == 1 and len(lines) == 1, p.stderr[-3000:]
    assert "no space left on the device" in lines[0] and "Traceback" not in p.stderr
    assert ("model", "me/full") not in fake_hub.repos or not fake_hub.commits("me/full")  # nothing half-assembled
    assert _snapshot(run, ("publish", ".publish.", "logs", "status.json", "state.json", ".fishtune.lock")) == before
    (disk / "filler").unlink()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "lora/lora.pth" in fake_hub.files("me/full")
