"""Faults: kill -9 during pack and merge, a full disk while a checkpoint is saved, truncated token and packed files.

kill -9 during extract and during train (then resume, same result) are tested in test_pipeline_e2e.py
(test_extract_resumes_after_kill) and test_training.py (test_kill_9_and_resume_gives_the_same_adapter); an
interrupted download in test_hub.py (test_interrupted_download_resumes). Here the kill lands at an exact point
(``FISHTUNE_KILL_AT``, :mod:`fishtune.faults`): the process sends itself SIGKILL with a file written under its
temporary name or a model folder half assembled, which is when a kill does the most damage.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import copy_run, run_inprocess, stage_cmd
from fishtune.training import checkpoints

pytestmark = pytest.mark.slow


def _killed_at(point: str, cmd: list[str]) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env={**os.environ, "FISHTUNE_KILL_AT": point}, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, f"expected a kill at {point}: rc {p.returncode}\n{p.stderr[-2000:]}"
    assert f"SIGKILL at {point.split('@')[0]}" in p.stderr
    return p


def _leftovers(root: Path) -> list[Path]:
    """Temporary files and folders of interrupted writes (``.name.xxxx.tmp``, ``.model.xxxx``)."""
    return [p for p in root.rglob(".*") if p.name.endswith(".tmp") or p.name.startswith((".model.", ".publish."))]


def test_kill_9_during_pack_then_rerun_gives_the_same_files(tmp_path, packed_run, finnish_data, tiny_model):
    run = copy_run(packed_run, tmp_path / "runs" / "pack")
    shutil.rmtree(run / "packed")
    # killed with val/00000000.protos written under its temporary name (train/ is already complete)
    _killed_at("write:00000000.protos@2", stage_cmd(run, finnish_data, tiny_model, "pack"))
    assert _leftovers(run / "packed"), "the kill should leave a temporary file behind"
    assert not (run / "packed" / "val" / "00000000.protos").exists()
    assert run_inprocess(run, finnish_data, tiny_model, "pack") == 0
    cmp = filecmp.dircmp(run / "packed", packed_run / "packed")
    assert sorted(p.relative_to(run / "packed").as_posix() for p in (run / "packed").rglob("*")) == sorted(
        p.relative_to(packed_run / "packed").as_posix() for p in (packed_run / "packed").rglob("*")
    )
    for sub in ("train", "val"):
        for name in os.listdir(run / "packed" / sub):
            assert filecmp.cmp(run / "packed" / sub / name, packed_run / "packed" / sub / name, shallow=False)
    assert not cmp.diff_files and not _leftovers(run)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, packed_run, finnish_data, tiny_model) -> Path:
    """A run trained for 10 steps (one checkpoint at step 10) and merged once."""
    run = copy_run(packed_run, tmp_path_factory.mktemp("trained") / "runs" / "t")
    steps = ["train.max_steps=10", "train.ckpt_every=10", "train.val_every=10"]
    assert run_inprocess(run, finnish_data, tiny_model, "train,merge", *steps) == 0
    return run


def test_kill_9_during_merge_keeps_the_old_model_and_rerun_is_identical(
    tmp_path, trained_run, finnish_data, tiny_model
):
    run = copy_run(trained_run, tmp_path / "runs" / "m", skip=())
    reference = torch.load(run / "model" / "model.pth", weights_only=True)
    before = {p.name: p.stat().st_mtime_ns for p in (run / "model").iterdir()}
    _killed_at("merge:written", stage_cmd(run, finnish_data, tiny_model, "merge"))
    # the earlier model folder is untouched; the half-assembled new one is a hidden temp folder
    assert {p.name: p.stat().st_mtime_ns for p in (run / "model").iterdir()} == before
    assert [p.name for p in _leftovers(run)] and all(p.name.startswith(".model.") for p in _leftovers(run))
    assert run_inprocess(run, finnish_data, tiny_model, "merge") == 0
    merged = torch.load(run / "model" / "model.pth", weights_only=True)
    assert merged.keys() == reference.keys() and all(torch.equal(merged[k], reference[k]) for k in merged)
    assert not _leftovers(run)
    assert sorted(p.name for p in (run / "model").iterdir()) == sorted(before)


def _mount_tmpfs(where: Path, size: int) -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "needs root to mount a small tmpfs (a real full disk); CI runs as root. "
            "Run as root or: sudo -E .venv/bin/pytest tests/test_faults.py -k disk_full"
        )
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if p.returncode != 0:
        pytest.fail(f"could not mount a tmpfs at {where} although root: {p.stderr.decode().strip()}")


def test_disk_full_during_checkpoint_save(tmp_path, trained_run, finnish_data, tiny_model, capsys):
    run = copy_run(trained_run, tmp_path / "runs" / "full", skip=("model",))
    ckdir = run / "train" / "checkpoints"
    (prev,) = checkpoints.list_steps(ckdir)
    original = prev.read_bytes()
    # a filesystem with room for the step-10 checkpoint and half of the next one
    size = (len(original) * 3 // 2 // 4096 + 1) * 4096
    outside = tmp_path / "ck-backup"
    shutil.copytree(ckdir, outside)
    _mount_tmpfs(ckdir, size)
    try:
        shutil.copy2(outside / prev.name, ckdir / prev.name)
        capsys.readouterr()
        steps = ["train.max_steps=12", "train.ckpt_every=1", "train.val_every=10"]  # the next save is at step 11
        assert run_inprocess(run, finnish_data, tiny_model, "train", *steps) == 1
        err = capsys.readouterr().err
        (line,) = [x for x in err.splitlines() if x.startswith("error:")]  # one line (Lightning may warn too)
        assert line.startswith("error: could not write checkpoint") and "step_000000011.ckpt" in line
        assert "No space left on device" in line and "previous checkpoint, which is intact" in line
        assert "Traceback" not in err
        # the previous checkpoint is intact, nothing half-written is left
        assert sorted(p.name for p in ckdir.iterdir()) == [prev.name]
        assert (ckdir / prev.name).read_bytes() == original and checkpoints.is_intact(ckdir / prev.name)
        assert "could not write checkpoint" in (run / "logs" / "train.log").read_text()
    finally:
        subprocess.run(["umount", str(ckdir)], check=False)
    # with space again, the rerun resumes from step 10 and finishes (what a user does after freeing space)
    assert sorted(p.name for p in ckdir.iterdir()) == [prev.name]
    assert run_inprocess(run, finnish_data, tiny_model, "train", *steps) == 0
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert Path(summary["resumed_from"]).name == "step_000000010.ckpt" and summary["steps"] == 12


def test_truncated_token_and_packed_files_are_detected(tmp_path, packed_run, finnish_data, tiny_model, capsys):
    run = copy_run(packed_run, tmp_path / "runs" / "trunc")
    npy = sorted((run / "tokens").rglob("*.npy"))[3]
    npy.write_bytes(npy.read_bytes()[:-16])
    shutil.rmtree(run / "packed")
    capsys.readouterr()
    assert run_inprocess(run, finnish_data, tiny_model, "pack") == 1
    err = capsys.readouterr().err
    assert f"token file {npy} is truncated or corrupt" in err and "rerun the extract stage" in err
    # extract notices it too and re-encodes only that clip
    assert run_inprocess(run, finnish_data, tiny_model, "extract,pack") == 0
    summary = json.loads((run / "tokens" / "summary.json").read_text())
    assert (summary["clips"], summary["cached"], summary["encoded"]) == (12, 11, 1)

    protos = run / "packed" / "train" / "00000000.protos"
    protos.write_bytes(protos.read_bytes()[:-100])
    capsys.readouterr()
    assert run_inprocess(run, finnish_data, tiny_model, "train") == 1
    err = capsys.readouterr().err
    assert f"{protos} is truncated" in err and "rerun the pack stage" in err and "Traceback" not in err


def test_out_of_memory_during_training_is_one_line_with_the_fix(tmp_path, packed_run, finnish_data, tiny_model):
    # a real failed allocation: the process's data segment is capped (RLIMIT_DATA) and the batch is far too big
    import resource

    run = copy_run(packed_run, tmp_path / "runs" / "oom")
    cap = 4 * 2**30

    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    cmd = stage_cmd(run, finnish_data, tiny_model, "train", "train.batch_size=4096", "train.ce_chunk=0")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert p.returncode == 1, p.stderr[-2000:]
    (line,) = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: the machine ran out of memory (RAM) in stage train: ")
    assert "train.batch_size" in line and "rerunning resumes" in line
    assert "Traceback" not in p.stderr
    assert "Traceback" in (run / "logs" / "train.log").read_text()  # kept for a bug report


def test_cuda_out_of_memory_is_named_with_the_stage_fix():
    from fishtune import cli

    err = cli._out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "extract")
    assert err.one_line().startswith("the GPU ran out of memory in stage extract: CUDA out of memory.")
    assert "extract.max_batch_seconds" in err.one_line()
    assert cli._out_of_memory(ValueError("something else"), "train") is None
