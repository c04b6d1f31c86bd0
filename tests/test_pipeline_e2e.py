"""doctor -> prepare -> extract -> pack on real espeak-ng Finnish audio with the tiny codec, via the real CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from fishtune import lora, packed, stages, tokens
from fishtune.runstate import sha256_file

pytestmark = pytest.mark.e2e


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _encoded(run):
    """What the last extract did, from tokens/summary.json."""
    summary = json.loads((run / "tokens" / "summary.json").read_text())
    return {k: summary[k] for k in ("clips", "cached", "encoded")}


def test_data_half_end_to_end(runner):
    runner("doctor,prepare,extract,pack", *TINY)
    run = runner.run_dir
    states = {name: s["state"] for name, s in json.loads((run / "status.json").read_text())["stages"].items()}
    assert states == dict.fromkeys(("doctor", "prepare", "extract", "pack"), "done")

    # prepare: 12 clips accepted, the 3 broken inputs rejected with their reasons, nothing silently dropped
    manifest = _jsonl(run / "clips" / "manifest.jsonl")
    rejected = {r["id"]: r["reason"] for r in _jsonl(run / "clips" / "rejected.jsonl")}
    assert len(manifest) == 12
    assert set(rejected) == {"puhuja/rikki", "puhuja/ilman_tekstia", "puhuja/tyhja_teksti"}
    assert "cannot decode audio" in rejected["puhuja/rikki"]
    assert "missing transcript" in rejected["puhuja/ilman_tekstia"]
    assert "transcript is empty" in rejected["puhuja/tyhja_teksti"]
    import soundfile as sf

    for row in manifest:
        info = sf.info(str(run / "clips" / row["path"]))
        assert (info.samplerate, info.channels) == (44100, 1)
        assert abs(info.duration - row["duration"]) < 0.01
        assert 1.0 < row["duration"] < 10.0
    by_id = {r["id"]: r for r in manifest}
    assert by_id["puhuja/lause_004"]["source_channels"] == 2  # the stereo mp3 was downmixed
    # Finnish normalisation ran: "klo 14.30" and "n. 2 tuntia" are words in the .lab
    assert "kello neljätoista kolmekymmentä" in by_id["puhuja/lause_002"]["text"]
    assert (run / "clips" / "puhuja" / "lause_002.lab").read_text().strip() == by_id["puhuja/lause_002"]["text"]
    stats = json.loads((run / "clips" / "stats.json").read_text())
    assert (stats["inputs"], stats["accepted"], stats["rejected"], stats["durations"]["count"]) == (15, 12, 3, 12)

    # extract: one [4, frames] int token file per clip, frames = ceil(samples / 2048)
    for row in manifest:
        codes = tokens.load(run / "tokens" / f"{row['id']}.npy")
        assert codes.shape[0] == 4
        assert codes.shape[1] == int(np.ceil(row["duration"] * 44100 / 2048))
        assert codes[0].max() < 64 and codes[1:].max() < 32 and codes.min() >= 0

    # pack: every clip exactly once, val held out of train
    split = json.loads((run / "packed" / "split.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 11
    assert not set(split["val"]) & set(split["train"])
    train = packed.read_dir(run / "packed" / "train")
    val = packed.read_dir(run / "packed" / "val")
    train_texts = [s.texts[0] for r in train for s in r.sentences]
    val_texts = [s.texts[0] for r in val for s in r.sentences]
    assert len(train_texts) == 11 and len(val_texts) == 1
    sent = val[0].sentences[0]
    (val_id,) = split["val"]
    assert sent.texts[0] == by_id[val_id]["text"]
    np.testing.assert_array_equal(packed.sentence_codes(sent), tokens.load(run / "tokens" / f"{val_id}.npy"))

    # second run: everything cached, nothing re-encoded, pack up to date
    packed_at = (run / "packed" / "summary.json").stat().st_mtime_ns
    again = runner("prepare,extract,pack", *TINY).stdout
    assert _encoded(run) == {"clips": 12, "cached": 12, "encoded": 0}
    assert "resuming: 13 of 13 inputs already processed" in again  # the journal's count is only in the log
    assert (run / "packed" / "summary.json").stat().st_mtime_ns == packed_at  # pack skipped: nothing rewritten

    # delete half of the token files: only those are encoded again, with identical codes
    before = {r["id"]: tokens.load(run / "tokens" / f"{r['id']}.npy") for r in manifest}
    for row in manifest[::2]:
        (run / "tokens" / f"{row['id']}.npy").unlink()
    runner("extract", *TINY)
    assert _encoded(run) == {"clips": 12, "cached": 6, "encoded": 6}
    for row in manifest:
        np.testing.assert_array_equal(tokens.load(run / "tokens" / f"{row['id']}.npy"), before[row["id"]])

    # a changed clip (same name, different audio) is re-encoded: the cache is keyed by content
    clip = run / "clips" / manifest[1]["path"]
    import soundfile as sf

    data, sr = sf.read(str(clip))
    sf.write(str(clip), data[::-1].copy(), sr, subtype="PCM_16")
    runner("extract", *TINY)
    assert _encoded(run) == {"clips": 12, "cached": 11, "encoded": 1}


def test_extract_resumes_after_kill(runner):
    runner("prepare", *TINY)
    tokens_dir = runner.run_dir / "tokens"
    proc = runner.popen("extract", *TINY, "extract.max_batch_clips=1")
    deadline = time.time() + 300
    while time.time() < deadline and len(list(tokens_dir.glob("*/*.npy"))) < 3:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = len(list(tokens_dir.glob("*/*.npy")))
    assert 3 <= done_before < 12, "the kill should land in the middle of the run"
    runner("extract", *TINY)
    assert _encoded(runner.run_dir) == {"clips": 12, "cached": done_before, "encoded": 12 - done_before}
    assert len(list(tokens_dir.glob("*/*.npy"))) == 12
    assert not list(tokens_dir.glob("*/.*.tmp"))


def test_prepare_fails_when_too_much_is_rejected(runner, tmp_path, finnish_data):
    from conftest import copy_data

    data = copy_data(finnish_data, tmp_path / "mostly_broken")
    for lab in sorted((data / "puhuja").glob("lause_00[0-5].lab")):
        lab.write_text("")
    proc = runner("prepare", *TINY, env={"FISHTUNE_DATA": str(data)}, check=False)
    assert proc.returncode == 1
    assert "9 of 15 inputs rejected (60% > prepare.max_reject_fraction=0.2)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(_jsonl(runner.run_dir / "logs" / "prepare.rejected.jsonl")) == 9  # the report is still written
    runner("prepare", *TINY, "prepare.max_reject_fraction=0.7", env={"FISHTUNE_DATA": str(data)})
    stats = json.loads((runner.run_dir / "clips" / "stats.json").read_text())
    assert (stats["inputs"], stats["accepted"], stats["rejected"]) == (15, 6, 9)


def test_later_stages_name_the_missing_input(runner):
    proc = runner("extract", *TINY, check=False)
    assert proc.returncode == 1
    assert "manifest.jsonl not found" in proc.stderr and "run the prepare stage first" in proc.stderr


def test_whole_chain_all_stages(runner, tmp_path):
    """STAGE=all: doctor -> prepare -> extract -> pack -> train -> merge -> synthesize, as in the container."""
    import soundfile as sf

    proc = runner(*TINY, env={"STAGE": "all", "GPU_HOURLY_USD": "2.5"})
    run = runner.run_dir
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert summary["best_val_loss"] < summary["baseline"]["base_val_loss"]
    model_dir = run / "model"
    for name in ("model.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json", "codec.pth", "README.md"):
        assert (model_dir / name).is_file()
    state = json.loads((model_dir / "state.json").read_text())
    assert state["validation"]["fish_speech_loader"] is True
    assert state["validation"]["nonzero_deltas"] == state["validation"]["adapted_tensors"] == 20
    assert state["lora"] == {"r": 8, "alpha": 16.0, "dropout": 0.01, "targets": list(lora.UPSTREAM_TARGETS)}
    assert state["base"]["sha256"] == sha256_file(Path(runner.env["FISHTUNE_MODEL"]) / "model.pth")
    assert "**Licence.**" in (model_dir / "README.md").read_text()
    wavs = sorted((run / "samples").glob("*.wav"))
    assert len(wavs) == 4  # the recipe's sample sentences
    for wav in wavs:
        info = sf.info(str(wav))
        assert info.samplerate == 44100 and info.channels == 1 and info.frames > 2048
        data, _ = sf.read(str(wav))
        assert np.abs(data).max() > 0
    rows = _jsonl(run / "samples" / "index.jsonl")
    assert "kello yhdeksän viisitoista" in rows[1]["normalized"]

    # watching it: progress lines for each stage, status.json, and the final summary table with cost
    for line in ("prepare: 13/13 clips", "extract: 12/12 clips", "pack: 12/12 clips", "step 30/30", "synthesize: 4/4"):
        assert line in proc.stdout, line
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["cost"]["gpu_hourly_usd"] == 2.5
    assert status["stages"]["synthesize"]["state"] == "done"
    assert status["stages"]["fetch"]["state"] == "skipped" and status["stages"]["publish"]["state"] == "skipped"
    done = json.loads((run / "summary.json").read_text())
    assert [r["stage"] for r in done["stages"]] == list(stages.CHAIN) and done["ok"] is True
    assert all(isinstance(r["cost_usd"], float) for r in done["stages"])
    table = proc.stdout.split("summary of run test (done)")[1]
    assert "total" in table and "train/lora.pth (30 steps" in table and "next:" in table and "listen to" in table
    assert "stage train: done in" in proc.stdout and "cost $" in proc.stdout

    # one sentence from TEXT, a text file, and base + LoRA before merging
    runner("synthesize", *TINY, "synthesize.output=" + str(tmp_path / "one"), env={"TEXT": "Moi 3 kertaa!"})
    assert [r["normalized"] for r in _jsonl(tmp_path / "one" / "index.jsonl")] == ["Moi kolme kertaa!"]
    assert [p.name for p in (tmp_path / "one").glob("*.wav")] == ["000.wav"]
    lines = tmp_path / "lines.txt"
    lines.write_text("Ensimmäinen lause.\n\nToinen lause.\n", encoding="utf-8")
    two = runner(
        "synthesize",
        *TINY,
        f"synthesize.text_file={lines}",
        "synthesize.model=lora",
        "synthesize.output=" + str(tmp_path / "two"),
    )
    assert "using base model + LoRA" in two.stdout and len(list((tmp_path / "two").glob("*.wav"))) == 2
    ref = next((run / "clips" / "puhuja").glob("*.wav"))
    three = runner(
        "synthesize",
        *TINY,
        f"synthesize.reference_audio={ref}",
        "synthesize.reference_text=Hei",
        "synthesize.output=" + str(tmp_path / "three"),
    )
    assert "reference clip" in three.stdout
    bad = runner("synthesize", *TINY, "synthesize.text_file=/nonexistent.txt", check=False)
    assert bad.returncode == 1 and "not found" in bad.stderr
