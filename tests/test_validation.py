"""Validation measures something: held-out clips longer than a row are left out loudly, never cut to an empty
sample whose loss reads 0.0000; a transcript far too long for its audio is rejected by prepare."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import stage_cmd
from fishtune.modeling.llm import load_tokenizer
from fishtune.training.samples import Utterance, ValSet


def test_held_out_utterances_longer_than_a_row_are_left_out_not_cut(tiny_model):
    tok = load_tokenizer(tiny_model)
    short = Utterance("Hei.", np.zeros((4, 20), dtype=np.int64))
    long = Utterance("pitkä lause " * 200, np.zeros((4, 20), dtype=np.int64))
    ds = ValSet([[short, long]], tok, 4, 1024)
    assert len(ds) == 1 and ds.left_out == [long]
    inputs, labels = ds[0]
    assert inputs.shape[1] <= 1024 and (labels[1:] >= 0).any()  # whole, with its audio targets


@pytest.mark.slow
def test_no_held_out_clip_fitting_max_length_fails_train_with_one_line(fresh_run, finnish_data, tiny_model):
    cmd = stage_cmd(fresh_run, finnish_data, tiny_model, "train", "train.max_length=24")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr
    lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "no held-out clip fits train.max_length=24" in lines[0]
    assert "Traceback" not in p.stderr
    assert not (fresh_run / "train" / "lora.pth").exists()


@pytest.mark.slow
def test_prepare_rejects_a_transcript_far_too_long_for_its_audio(tmp_path, finnish_data, tiny_model):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(finnish_data, data)
    lab = sorted((data / "puhuja").glob("lause_000.lab"))[0]
    lab.write_text("Tämä teksti ei kuulu tähän ääneen. " * 40, encoding="utf-8")
    run = tmp_path / "runs" / "r"
    cmd = stage_cmd(run, data, tiny_model, "prepare", "prepare.max_reject_fraction=0.5")  # 3 broken inputs already
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    rejected = [json.loads(x) for x in (run / "clips" / "rejected.jsonl").read_text().splitlines()]
    row = next(r for r in rejected if r["id"] == "puhuja/lause_000")
    assert "transcript too long for the audio" in row["reason"] and "prepare.max_chars_per_second=40" in row["reason"]


@pytest.mark.slow
def test_unreadable_transcript_and_speaker_folder_are_listed_not_crashing(tmp_path, finnish_data, tiny_model):
    """Root reads everything, so the stage runs without the capabilities that let root ignore permissions."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(finnish_data, data)
    (data / "puhuja" / "lause_001.lab").chmod(0)
    other = data / "toinen"
    other.mkdir()
    shutil.copy(data / "puhuja" / "lause_002.wav", other / "x.wav")
    (other / "x.lab").write_text("Hei.", encoding="utf-8")
    other.chmod(0)
    run = tmp_path / "runs" / "r"
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    cmd = stage_cmd(run, data, tiny_model, "prepare", "prepare.max_reject_fraction=0.9")
    try:
        p = subprocess.run([*drop, *cmd], capture_output=True, text=True, timeout=600)
    finally:
        other.chmod(0o755)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    rows = (run / "clips" / "rejected.jsonl").read_text().splitlines()
    rejected = {r["id"]: r["reason"] for r in map(json.loads, rows)}
    assert any("lause_001" in k and "lab" in v.lower() for k, v in rejected.items()), rejected
    assert any("toinen" in k for k in rejected), rejected


def test_heldout_loss_weighs_every_sample_once(tiny_model):
    """One held-out loss for evaluation and training: a short last batch counts by its samples, not as a whole
    batch (same-length samples, so each one's loss is its share of a batch's token mean)."""
    import torch

    from fishtune.evaluation.loss import heldout_loss
    from fishtune.modeling.llm import load_llm
    from fishtune.training.samples import Collate

    model = load_llm(tiny_model).eval()
    tok, nc, size = model.tokenizer, model.config.num_codebooks, model.config.codebook_size
    rng = np.random.default_rng(0)
    utts = [Utterance("Hei maailma.", rng.integers(0, size, (nc, 12))) for _ in range(3)]
    ds = ValSet([utts], tok, nc, 1024)
    collate = Collate(tok.get_token_id("<|end_of_text|>"))
    cpu, f32 = torch.device("cpu"), torch.float32
    alone = [heldout_loss(model, [collate([ds[i]])], cpu, f32)["val_loss"] for i in range(3)]
    batches = [collate([ds[0], ds[1]]), collate([ds[2]])]
    got = heldout_loss(model, batches, cpu, f32)
    assert got["samples"] == 3 and got["batches"] == 2
    assert abs(got["val_loss"] - sum(alone) / 3) < 1e-5 * abs(got["val_loss"])
    batch_means = (heldout_loss(model, batches[:1], cpu, f32)["val_loss"] + alone[2]) / 2
    assert abs(batch_means - got["val_loss"]) > 1e-4  # the average of batch means would differ
    first = heldout_loss(model, batches, cpu, f32, max_batches=1)
    assert first["samples"] == 2 and abs(first["val_loss"] - sum(alone[:2]) / 2) < 1e-5 * first["val_loss"]
    assert abs(got["val_base_loss"] + got["val_semantic_loss"] - got["val_loss"]) < 1e-5 * got["val_loss"]
    assert heldout_loss(model, [], cpu, f32) is None
