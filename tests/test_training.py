"""Training on the espeak-ng Finnish clips with the tiny model: loss goes down, resume is exact, the guard,
corrupt checkpoints, early stopping and incremental training."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch

from conftest import copy_run, run_inprocess, stage_cmd

pytestmark = pytest.mark.slow


def _summary(run_dir):
    return json.loads((run_dir / "train" / "summary.json").read_text())


def _log(run_dir, stage="train"):
    return (run_dir / "logs" / f"{stage}.log").read_text()


def _lora(run_dir):
    return torch.load(run_dir / "train" / "lora.pth", weights_only=False)["state_dict"]


def test_loss_goes_down_on_held_out_clips(fresh_run, finnish_data, tiny_model):
    assert run_inprocess(fresh_run, finnish_data, tiny_model, "train") == 0
    s = _summary(fresh_run)
    assert s["steps"] == 30 and not s["stopped_early"]
    assert s["packing"] == "fill"  # default: full rows, flash attention
    assert s["gradient_checkpointing"] == {"checkpointed": 0, "units": 3, "reason": "cpu"}  # auto on the CPU
    assert "gradient checkpointing: 0 of 3 layers (cpu)" in _log(fresh_run)
    assert s["best_val_loss"] < s["baseline"]["base_val_loss"] - 0.5
    rows = [json.loads(x) for x in (fresh_run / "train" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["train/loss"] for r in rows if "train/loss" in r]
    val_losses = [r["val/loss"] for r in rows if "val/loss" in r]
    assert len(val_losses) == 3 and val_losses[-1] < val_losses[0]
    assert train_losses[-1] < train_losses[0]
    assert {"train/base_loss", "train/semantic_loss", "train/top5_accuracy", "train/lr"} <= set(rows[-2])
    ckpts = sorted(p.name for p in (fresh_run / "train" / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["step_000000010.ckpt", "step_000000020.ckpt", "step_000000030.ckpt"]
    ck = torch.load(fresh_run / "train" / "checkpoints" / ckpts[-1], weights_only=False)
    assert ck["state_dict"] and all("lora_" in k for k in ck["state_dict"])  # LoRA only, not the base
    assert ck["global_step"] == 30 and ck["optimizer_states"] and ck["lr_schedulers"]
    assert (fresh_run / "train" / "best.ckpt").is_file()
    assert list((fresh_run / "train" / "tensorboard").rglob("events.out.tfevents.*"))
    assert "base weights verified unchanged" in _log(fresh_run)


def _train_cmd(run_dir, data, model, *extra):
    return stage_cmd(
        run_dir,
        data,
        model,
        "train",
        "lora.dropout=0",
        "train.max_steps=40",
        "train.ckpt_every=4",
        "train.val_every=8",
        *extra,
    )


def test_kill_9_and_resume_gives_the_same_adapter(tmp_path, packed_run, finnish_data, tiny_model):
    import shutil

    straight = tmp_path / "runs" / "straight"
    killed = tmp_path / "runs" / "killed"
    for d in (straight, killed):
        shutil.copytree(packed_run, d)
    subprocess.run(_train_cmd(straight, finnish_data, tiny_model), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(
        _train_cmd(killed, finnish_data, tiny_model), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckdir = killed / "train" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckdir / "step_000000008.ckpt").exists():
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no clean-up runs
    proc.wait()
    assert not (killed / "train" / "lora.pth").exists(), "the kill should land before training finished"
    done = subprocess.run(_train_cmd(killed, finnish_data, tiny_model), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout and "resumed at step" in done.stdout
    a, b = _lora(straight), _lora(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert _summary(killed)["steps"] == 40


def test_corrupt_newest_checkpoint_falls_back_to_previous(fresh_run, finnish_data, tiny_model):
    assert run_inprocess(fresh_run, finnish_data, tiny_model, "train", "train.max_steps=20") == 0
    newest = fresh_run / "train" / "checkpoints" / "step_000000020.ckpt"
    newest.write_bytes(newest.read_bytes()[:1000])  # half-written
    assert run_inprocess(fresh_run, finnish_data, tiny_model, "train", "train.max_steps=30") == 0
    log = _log(fresh_run)
    assert "step_000000020.ckpt is corrupt" in log
    assert "resuming from" in log and "step_000000010.ckpt" in log.split("resuming from")[-1].splitlines()[0]
    assert (fresh_run / "train" / "checkpoints" / "step_000000020.ckpt.corrupt").exists()
    assert _summary(fresh_run)["steps"] == 30


def test_guard_refuses_an_untrained_base_model(fresh_run, finnish_data, tiny_model):
    rc = run_inprocess(fresh_run, finnish_data, tiny_model, "train", "model.allow_untrained=false")
    assert rc == 1
    assert "looks untrained" in _log(fresh_run) and "random base" in _log(fresh_run)
    assert not list((fresh_run / "train" / "checkpoints").glob("*.ckpt"))  # no money spent


def test_early_stopping_on_validation_loss(fresh_run, finnish_data, tiny_model):
    # lr 0: validation loss never improves, so training stops after `patience` validations without progress
    # (and the padded packing train.packing=pad, a configured number of checkpointed layers and compiled layers too)
    never_improves = ("train.lr=0", "train.val_every=2", "train.early_stopping.patience=2", "train.max_steps=30")
    other_paths = ("train.packing=pad", "train.gradient_checkpointing=2", "train.compile=aot_eager")
    assert run_inprocess(fresh_run, finnish_data, tiny_model, "train", *never_improves, *other_paths) == 0
    s = _summary(fresh_run)
    assert s["stopped_early"] and s["steps"] == 6
    assert s["packing"] == "pad" and s["gradient_checkpointing"]["checkpointed"] == 2
    assert "torch.compile (aot_eager)" in _log(fresh_run)
    assert (fresh_run / "train" / "checkpoints" / "step_000000006.ckpt").is_file()  # the end state is kept
    # rerunning a finished run with the same settings does nothing (and does not train past the stop)
    assert run_inprocess(fresh_run, finnish_data, tiny_model, "train", *never_improves, *other_paths) == 0
    assert "already finished at step 6 (stopped early)" in _log(fresh_run)
    assert _summary(fresh_run)["steps"] == 6


def test_incremental_training_from_lora_and_from_merged_model(tmp_path, fresh_run, finnish_data, tiny_model):
    assert run_inprocess(fresh_run, finnish_data, tiny_model, "train,merge") == 0
    first = _summary(fresh_run)
    # (a) continue from the earlier run's adapter, on the same or new data
    run2 = copy_run(fresh_run, tmp_path / "runs" / "from_lora")
    assert (
        run_inprocess(
            run2, finnish_data, tiny_model, "train", f"train.init_lora={fresh_run / 'train'}", "train.max_steps=10"
        )
        == 0
    )
    second = _summary(run2)
    assert second["baseline"]["base_val_loss"] == pytest.approx(first["best_val_loss"], abs=0.05)
    assert "LoRA initialised from" in _log(run2)
    # (b) start a fresh adapter on the earlier merged model
    run3 = copy_run(fresh_run, tmp_path / "runs" / "from_merged")
    assert run_inprocess(run3, finnish_data, fresh_run / "model", "train", "train.max_steps=10") == 0
    third = _summary(run3)
    assert third["baseline"]["base_val_loss"] == pytest.approx(first["best_val_loss"], abs=0.05)


def test_kill_9_resume_with_dropout_is_exact_and_a_changed_finished_run_says_so(
    tmp_path, packed_run, finnish_data, tiny_model
):
    """The default lora.dropout=0.01 draws random numbers: checkpoints carry the RNG state, so a resumed run is
    identical; metrics.jsonl has each step once; a finished run rerun with other settings names what changed."""
    import shutil

    straight, killed = tmp_path / "runs" / "straight", tmp_path / "runs" / "killed"
    for d in (straight, killed):
        shutil.copytree(packed_run, d)
    args = ("lora.dropout=0.01", "train.max_steps=16", "train.ckpt_every=4", "train.val_every=8", "train.log_every=1")
    subprocess.run(stage_cmd(straight, finnish_data, tiny_model, "train", *args), check=True, timeout=600)
    proc = subprocess.Popen(stage_cmd(killed, finnish_data, tiny_model, "train", *args), stdout=subprocess.DEVNULL)
    metrics = killed / "train" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:  # past the step-8 checkpoint, with steps after it logged
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
        if (killed / "train/checkpoints/step_000000008.ckpt").exists() and any(r["step"] > 9 for r in rows):
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (killed / "train" / "lora.pth").exists(), "the kill should land before training finished"
    done = subprocess.run(stage_cmd(killed, finnish_data, tiny_model, "train", *args), capture_output=True, text=True)
    assert done.returncode == 0 and "resumed at step" in done.stdout, done.stderr
    a, b = _lora(straight), _lora(killed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if "train/loss" in x]
    assert steps == list(range(1, 17)), steps
    # rerunning the finished run with other settings: not "nothing to do" with the old adapter
    for change, says in (("train.lr=2e-4", "train.lr 0.001 -> 0.0002"), ("lora.r=4", "lora.r 8 -> 4")):
        p = subprocess.run(
            stage_cmd(straight, finnish_data, tiny_model, "train", *args, change), capture_output=True, text=True
        )
        assert p.returncode == 2 and says in p.stderr and "start a new run" in p.stderr, p.stderr
    p = subprocess.run(stage_cmd(straight, finnish_data, tiny_model, "train", *args), capture_output=True, text=True)
    assert p.returncode == 0 and "nothing to do" in p.stdout
