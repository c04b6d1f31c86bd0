"""Data-parallel training on the CPU (gloo), launched the way a user launches it: ``torchrun --nproc-per-node 2``
running the CLI's ``train`` stage, and the CLI alone with ``train.devices=2`` (Lightning starts the second
process). Two ranks x batch b train like one rank x batch 2b, a kill -9 of the whole job resumes, and rank zero
alone writes. Plus the pieces: disjoint rank slices of the packed stream, the launcher
environment, device placement."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ENTRYPOINT, run_inprocess, stage_args
from fishtune import devices, distributed
from fishtune.errors import UsageError

LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "NODE_RANK",
               "GROUP_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NNODES", "SLURM_LOCALID")  # fmt: skip


@pytest.fixture
def launcher_env(monkeypatch):
    """A clean launcher environment; ``set(**vars)`` fakes one."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)

    def set_(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))

    return set_


# --- the pieces ------------------------------------------------------------------------------------------------


def test_ranks_get_disjoint_slices_that_make_up_the_single_rank_batch(packed_run, tiny_model):
    from fishtune.modeling.llm import load_llm
    from fishtune.training.samples import Collate, PackedTrainStream, load_groups

    model = load_llm(tiny_model)
    tok, nc = model.tokenizer, model.config.num_codebooks
    groups = load_groups(packed_run / "packed" / "train", nc)
    collate = Collate(tok.get_token_id("<|end_of_text|>"))

    def stream(batch_size, rank=0, world=1, start=0):
        return PackedTrainStream(groups, tok, nc, 256, batch_size, collate, seed=3, start_batch=start, rank=rank,
                                 world=world)  # fmt: skip

    one = stream(4)
    r0, r1 = stream(2, 0, 2), stream(2, 1, 2)
    for b in range(3):
        ids0, ids1 = set(r0.sample_ids(b)), set(r1.sample_ids(b))
        assert not ids0 & ids1
        assert ids0 | ids1 == set(one.sample_ids(b))
    # the samples themselves: rank 0's then rank 1's rows are the single rank's rows
    for b in range(2):
        joined = [r0.sample(k) for k in r0.sample_ids(b)] + [r1.sample(k) for k in r1.sample_ids(b)]
        for (x, y), (x1, y1) in zip(joined, [one.sample(k) for k in one.sample_ids(b)], strict=True):
            assert torch.equal(x, x1) and torch.equal(y, y1)
    # a resumed stream (start_batch = steps x accumulation) continues where the uninterrupted one was
    it = iter(stream(2, 1, 2, start=5))
    assert torch.equal(next(it)["inputs"], r1.batch(5)["inputs"])


def test_rank_zero_and_the_stages_each_rank_runs(launcher_env):
    assert distributed.is_rank_zero() and distributed.launched_world() is None
    assert distributed.stages_for_this_process(["prepare", "train", "merge"]) == ["prepare", "train", "merge"]
    launcher_env(LOCAL_RANK=1, WORLD_SIZE=2)  # a child Lightning started for train.devices=2 with STAGE=all
    assert not distributed.is_rank_zero() and distributed.launched_world() is None
    assert distributed.stages_for_this_process(["prepare", "train", "merge"]) == ["train"]


def test_torchrun_runs_train_only(launcher_env):
    launcher_env(RANK=0, LOCAL_RANK=0, WORLD_SIZE=4, LOCAL_WORLD_SIZE=2, TORCHELASTIC_RUN_ID="x")
    assert distributed.is_rank_zero() and distributed.launched_world() == (2, 2)
    assert distributed.stages_for_this_process(["train"]) == ["train"]
    with pytest.raises(UsageError, match="run STAGE=train there"):
        distributed.stages_for_this_process(["pack", "train"])


def test_slurm_tasks_decide_the_world(launcher_env):
    launcher_env(SLURM_PROCID=3, SLURM_NTASKS=8, SLURM_NNODES=2, SLURM_LOCALID=3)
    assert not distributed.is_rank_zero()
    assert distributed.launched_world() == (4, 2) and distributed.local_rank() == 3


def test_placement_follows_the_launcher_and_names_a_mismatch(launcher_env):
    p = devices.placement("cpu", "auto", "auto")
    assert (p.accelerator, p.devices, p.num_nodes, p.world_size) == ("cpu", 1, 1, 1)
    assert devices.placement("cpu", 2, 1).world_size == 2  # CPU processes (gloo), as the tests use
    launcher_env(RANK=1, LOCAL_RANK=1, WORLD_SIZE=2, LOCAL_WORLD_SIZE=2, TORCHELASTIC_RUN_ID="x")
    p = devices.placement("cpu", "auto", "auto")
    assert (p.devices, p.num_nodes, p.world_size) == (2, 1, 2)
    with pytest.raises(UsageError, match="train.devices=3 but the launcher started 2"):
        devices.placement("cpu", 3, "auto")
    with pytest.raises(UsageError, match="must be auto or a number"):
        devices.placement("cpu", 0, "auto")


# --- the real launch ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRAIN = ("train.device=cpu", "lora.dropout=0", "train.max_steps=12", "train.ckpt_every=4", "train.val_every=4",
         "train.log_every=1", "train.keep_checkpoints=5")  # fmt: skip


def _torchrun(run_dir, data, model, *extra) -> list[str]:
    args = stage_args(run_dir, data, model, "train", *TRAIN, "train.batch_size=2", *extra)
    port = str(_free_port())
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
            str(ENTRYPOINT), *args]  # fmt: skip


def _process_tree(root: int) -> list[int]:
    """``root`` and every process below it (torchrun starts each rank in a session of its own, so a process group
    kill would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = Path(f"/proc/{stat}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _kill_9(root: int) -> None:
    for pid in _process_tree(root):  # listed first, then killed: the launcher cannot start a replacement
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _curve(run_dir) -> tuple[dict, dict]:
    rows = [json.loads(x) for x in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    val = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r]
    assert len(train) == len(dict(train)) and len(val) == len(dict(val)), "a step journalled twice"
    return dict(train), dict(val)


@pytest.mark.slow
def test_two_ranks_train_like_one_rank_with_twice_the_batch_and_resume_after_kill_9(
    tmp_path, packed_run, finnish_data, tiny_model
):
    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    for d in (one, two):
        shutil.copytree(packed_run, d)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS} | {"OMP_NUM_THREADS": "1"}

    # two ranks x batch 2, killed (SIGKILL to the whole job: torchrun and both ranks) after a checkpoint
    # (killing torchrun alone would leave its ranks training on, orphaned)
    job = subprocess.Popen(_torchrun(two, finnish_data, tiny_model), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    first = two / "train" / "checkpoints" / "step_000000004.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not first.exists() and job.poll() is None:
        time.sleep(0.02)
    _kill_9(job.pid)
    job.wait()
    assert first.exists() and not (two / "train" / "lora.pth").exists(), "the kill should land mid-training"
    kept = max(p.name for p in (two / "train" / "checkpoints").glob("step_*.ckpt"))
    time.sleep(2)
    assert not (two / "train" / "lora.pth").exists() and not list(two.rglob("*.tmp")), "no rank survived"

    # those checkpoints count global batches of 2 processes: resuming them with 1 would skip samples, so it is
    # refused in one line and nothing changes
    alone = [sys.executable, str(ENTRYPOINT), *stage_args(two, finnish_data, tiny_model, "train", *TRAIN,
             "train.batch_size=2", "train.devices=1")]  # fmt: skip
    wrong = subprocess.run(alone, env=env, capture_output=True, text=True, timeout=600)
    assert wrong.returncode == 2, wrong.stdout[-2000:] + wrong.stderr[-2000:]
    assert "error: the checkpoint to resume was trained by 2 process(es), this run has 1" in wrong.stderr
    assert max(p.name for p in (two / "train" / "checkpoints").glob("step_*.ckpt")) == kept

    # one rank x batch 4, uninterrupted, while nothing else runs
    assert run_inprocess(one, finnish_data, tiny_model, "train", *TRAIN, "train.batch_size=4") == 0

    # resumed without a launcher, the way one host runs (train.devices=2: Lightning starts the second process)
    again = [sys.executable, str(ENTRYPOINT), *stage_args(two, finnish_data, tiny_model, "train", *TRAIN,
             "train.batch_size=2", "train.devices=2")]  # fmt: skip
    done = subprocess.run(again, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert f"resuming from {two / 'train' / 'checkpoints' / kept}" in out
    assert "resumed at step" in out and out.count("resuming from") == 1  # rank zero tells the story

    s1, s2 = (json.loads((d / "train" / "summary.json").read_text()) for d in (one, two))
    assert (s2["steps"], s2["world_size"], s2["effective_batch"]) == (12, 2, 4)
    assert (s1["world_size"], s1["effective_batch"]) == (1, 4)
    assert s2["resumed_from"].endswith(kept)

    # the loss curves agree: training steps and the held-out losses, all-reduced over the ranks
    (t1, v1), (t2, v2) = _curve(one), _curve(two)
    assert sorted(t2) == list(range(1, 13)) and t1.keys() == t2.keys() and v1.keys() == {4, 8, 12}
    assert {8, 12} <= v2.keys() <= v1.keys()  # step 4's validation is lost when the kill lands just before it
    for step in t1:
        assert t2[step] == pytest.approx(t1[step], rel=1e-3), step
    for step in v2:
        assert v2[step] == pytest.approx(v1[step], rel=1e-3), step
    assert t2[12] < t2[1]
    a = torch.load(one / "train" / "lora.pth", weights_only=False)["state_dict"]
    b = torch.load(two / "train" / "lora.pth", weights_only=False)["state_dict"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-3, msg=k)

    # one set of outputs: rank zero's
    names = sorted(p.name for p in (two / "train").rglob("*") if p.is_file())
    ckpts = ["step_000000004.ckpt", "step_000000008.ckpt", "step_000000012.ckpt"]
    assert sorted(p.name for p in (two / "train" / "checkpoints").iterdir()) == ckpts
    assert [n for n in names if n.endswith(".ckpt")].count("best.ckpt") == 1
    assert not [n for n in names if "-v1" in n or n.endswith(".tmp") or n.startswith(".")]
    assert names.count("lora.pth") == names.count("summary.json") == names.count("metrics.jsonl") == 1
    assert json.loads((two / "status.json").read_text())["stages"]["train"]["state"] == "done"
