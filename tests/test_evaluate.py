"""Stage evaluate: metrics computed for real on espeak-ng audio, the checkpoint pick, the report in chromium.

The tiny model is random, so its "speech" is noise: these tests check that every metric is *computed* (and
computed right on audio with known properties), never that the voice is good.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, Runner, copy_run, run_inprocess
from fishtune import audio
from fishtune.evaluation import asr, metrics, pick

SR = 44100


# ----------------------------------------------------------------------------------------------- metrics


def test_cer_of_known_pairs():
    # one deleted character of 11 ("kissa istuu" -> "kisa istuu")
    assert metrics.cer("kissa istuu", "kisa istuu") == pytest.approx(1 / 11)
    # case, punctuation and whitespace do not count
    assert metrics.cer("Kissa, istuu!", "  kissa istuu ") == 0.0
    # numbers and abbreviations are compared as words: the ASR may write either form
    assert metrics.cer("Kokous alkaa klo 9.15.", "kokous alkaa kello yhdeksän viisitoista", "fi") == 0.0
    assert metrics.cer("3 omenaa", "kolme omenaa", "fi") == 0.0
    # all deleted; extra babble goes above 1
    assert metrics.cer("talo", "", "fi") == 1.0
    assert metrics.cer("talo", "talo talo talo", "fi") == pytest.approx(10 / 4)
    assert metrics.cer("", "mitä tahansa") is None
    assert metrics.cer_text("Hyvää  Päivää – 2 kertaa!", "fi") == "hyvää päivää kaksi kertaa"


def test_silence_and_duration_ratios(finnish_data):
    assert metrics.silence_ratio(np.zeros(SR), SR) == 1.0
    noise = (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    assert metrics.silence_ratio(noise, SR) == 0.0
    half = np.concatenate([np.zeros(SR // 2, dtype=np.float32), noise[: SR // 2]])
    assert metrics.silence_ratio(half, SR) == pytest.approx(0.5, abs=0.03)
    speech = audio.load(finnish_data / "puhuja" / "lause_000.wav", SR).samples
    ratio = metrics.silence_ratio(speech, SR)
    assert 0.02 < ratio < 0.6  # espeak-ng speech has pauses and a tail, but is mostly voiced
    assert metrics.duration_ratio(3.0, 2.0) == 1.5 and metrics.duration_ratio(3.0, None) is None
    rows = [{"text": "a" * 30, "duration": 2.0}, {"text": "b" * 10, "duration": 2.0}]
    assert metrics.speaking_rate(rows) == 10.0


@pytest.fixture(scope="module")
def speaker_encoder():
    return metrics.SpeakerEncoder("cpu")


@pytest.mark.slow
def test_speaker_similarity_on_espeak_speech(finnish_data, speaker_encoder):
    """espeak-ng's Finnish voice is one 'speaker': its clips match each other; noise and silence do not."""
    clips = [finnish_data / "puhuja" / f"lause_00{i}.wav" for i in (0, 1, 2, 3)]
    embs = [speaker_encoder.embed(audio.load(c, 16000).samples, 16000) for c in clips]
    ref = metrics.centroid(embs[1:])
    same_clip = metrics.similarity(embs[0], embs[0])
    same_voice = metrics.similarity(embs[0], ref)
    noise = (0.1 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32)
    to_noise = metrics.similarity(speaker_encoder.embed(noise, 16000), ref)
    print(f"similarity: clip to itself {same_clip:.3f}, to the other clips {same_voice:.3f}, noise {to_noise:.3f}")
    assert same_clip == pytest.approx(1.0, abs=1e-5)
    assert same_voice > 0.8
    assert to_noise < 0.6
    assert same_voice - to_noise > 0.25
    # a mute sample has no voice to compare: similarity 0, not an error
    assert speaker_encoder.embed(np.zeros(16000, dtype=np.float32), 16000) is None
    assert metrics.similarity(None, ref) == 0.0 and metrics.similarity(embs[0], None) is None
    # 44.1 kHz input is resampled to the encoder's 16 kHz: the same clip gives the same embedding
    hi = speaker_encoder.embed(audio.load(clips[0], SR).samples, SR)
    assert metrics.similarity(hi, embs[0]) > 0.97


def test_pick_rule():
    c = [
        {"name": "a", "cer": 0.10, "similarity": 0.70, "val_loss": 1.0},  # best CER, but not the voice
        {"name": "b", "cer": 0.20, "similarity": 0.80, "val_loss": 2.0},
        {"name": "c", "cer": 0.15, "similarity": 0.90, "val_loss": 3.0},
    ]
    best, reason = pick.choose(c, 0.75)
    assert best["name"] == "c" and "lowest CER" in reason
    no_cer = [dict(x, cer=None) for x in c]
    best, reason = pick.choose(no_cer, 0.75)
    assert best["name"] == "b" and "validation loss" in reason
    best, reason = pick.choose(c, 0.95)
    assert best["name"] == "c" and "highest" in reason
    tie = [dict(c[1], name="x", val_loss=5.0), dict(c[1], name="y", val_loss=4.0)]
    assert pick.choose(tie, 0.5)[0]["name"] == "y"
    assert "similarity >= 0.75" in pick.rule_text(0.75)


def test_asr_folder_checks(tmp_path):
    assert "no Whisper weights in" in asr.unavailable_reason(tmp_path / "none")
    assert "evaluate.asr_model is null" in asr.unavailable_reason(None)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text("{}")
    assert "lacks preprocessor_config.json, model.safetensors" in asr.unavailable_reason(tmp_path / "w")


# ----------------------------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, packed_run, finnish_data, tiny_model) -> Path:
    """packed_run + tiny training (checkpoints at steps 10, 20, 30)."""
    run_dir = copy_run(packed_run, tmp_path_factory.mktemp("evaluate") / "runs" / "ev")
    assert run_inprocess(run_dir, finnish_data, tiny_model, "train") == 0
    return run_dir


@pytest.fixture(scope="module")
def evaluated(trained_run, finnish_data, tiny_model) -> tuple[Path, str]:
    """STAGE=evaluate through the real entrypoint; the tests' cache has no Whisper, so CER is skipped."""
    runner = Runner(trained_run.parent.parent, finnish_data, tiny_model)
    env = {"STAGE": "evaluate", "RUN_NAME": trained_run.name, "FISHTUNE_CACHE": str(trained_run.parent / "cache")}
    proc = runner(*TINY, env=env)
    return trained_run, proc.stdout


def _report(run_dir: Path, name: str = "report") -> dict:
    return json.loads((run_dir / name / "report.json").read_text())


@pytest.mark.e2e
def test_evaluate_stage_on_the_tiny_model(evaluated):
    run_dir, out = evaluated
    assert "stage evaluate: done" in out
    rep = _report(run_dir)
    names = [s["name"] for s in rep["systems"]]
    assert names == ["reference", "base", "best"]  # preset=tiny: evaluate.checkpoints=[best]
    split = json.loads((run_dir / "packed" / "split.json").read_text())
    assert rep["counts"] == {"sentences": 2, "heldout": len(split["val"][:2])}
    assert rep["samples"][0]["text"].startswith("Huomenna on tiistai 14.5.")  # configs/eval/finnish.txt
    assert "neljästoista toukokuuta" in rep["samples"][0]["normalized"]
    held = [s for s in rep["samples"] if s["kind"] == "heldout"]
    assert held and held[0]["clip"] == split["val"][0]

    # no Whisper in the test cache: CER is null with the reason, in the JSON and on the page
    assert rep["asr"]["available"] is False and "no Whisper weights in" in rep["asr"]["note"]
    assert any(n.startswith("CER not computed") for n in rep["notes"])
    page = (run_dir / "report" / "index.html").read_text()
    assert "CER not computed: no Whisper weights in" in page

    for item in rep["samples"]:
        for name in ("base", "best"):
            r = item["results"][name]
            wav = run_dir / "report" / r["file"]
            data, sr = audio.read_wav(wav)
            assert sr == SR and abs(len(data) / sr - r["seconds"]) < 1e-3
            assert r["cer"] is None and r["transcript"] is None
            assert r["silence_ratio"] == pytest.approx(metrics.silence_ratio(data, sr), abs=1e-4)
            assert r["duration_ratio"] == pytest.approx(r["seconds"] / item["expected_seconds"], rel=1e-3)
            assert 0.0 <= r["similarity"] <= 1.0  # random "speech" is still measured, not skipped
        if item["kind"] == "heldout":
            ref = item["results"]["reference"]
            assert (run_dir / "report" / ref["file"]).read_bytes() == (
                run_dir / "clips" / f"{item['clip']}.wav"
            ).read_bytes()
    by = {s["name"]: s["metrics"] for s in rep["systems"]}
    for name in ("base", "best"):
        m = by[name]
        assert m["samples"] == len(rep["samples"])
        sims = [i["results"][name]["similarity"] for i in rep["samples"]]
        assert m["similarity"] == pytest.approx(np.mean(sims), abs=1e-4)
        assert m["cer"] is None and math.isfinite(m["val_loss"])
        assert m["val_loss"] == pytest.approx(m["val_base_loss"] + m["val_semantic_loss"], rel=1e-4)
    # the validation loss is the training's: base = the guard's baseline, best = the best validation
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    assert by["base"]["val_loss"] == pytest.approx(summary["baseline"]["base_val_loss"], rel=1e-3)
    assert by["best"]["val_loss"] == pytest.approx(summary["best_val_loss"], rel=1e-3)
    assert by["best"]["val_loss"] < by["base"]["val_loss"]
    # the pick: CER unavailable, so the stated rule falls back as it says
    best = json.loads((run_dir / "report" / "best_checkpoint.json").read_text())
    assert best == rep["best_checkpoint"]
    assert best["name"] == "best" and best["checkpoint"].endswith("best.ckpt") and "lowest mean CER" in best["rule"]
    assert Path(best["checkpoint"]).is_file()
    assert (
        "Loss curves" in page
        and "<svg" in page
        and page.count("<audio") == sum(len(i["results"]) for i in rep["samples"])
    )
    state = json.loads((run_dir / "state.json").read_text())["stages"]["evaluate"]
    assert state["status"] == "done" and state["report"].endswith("report/index.html")


@pytest.mark.e2e
def test_evaluate_is_idempotent_and_merge_takes_the_pick(evaluated, finnish_data, tiny_model, capsys):
    run_dir, _ = evaluated
    before = (run_dir / "report" / "index.html").stat().st_mtime_ns
    assert run_inprocess(run_dir, finnish_data, tiny_model, "evaluate") == 0
    assert (run_dir / "report" / "index.html").stat().st_mtime_ns == before  # up to date: nothing rewritten

    # score steps 10 and 20 into a second report; with no CER and every similarity allowed, the rule takes the
    # lower validation loss (step 20), which is not train/best.ckpt: merge checkpoint=best must follow the pick
    other = run_dir / "report_steps"
    args = ["evaluate.checkpoints=[10,20]", "evaluate.pick.min_similarity=0", f"evaluate.output={other}"]
    assert run_inprocess(run_dir, finnish_data, tiny_model, "evaluate", *args) == 0
    rep = _report(run_dir, "report_steps")
    assert [s["name"] for s in rep["systems"]][1:] == ["base", "step_10", "step_20"]
    assert [s["step"] for s in rep["systems"]][1:] == [None, 10, 20]
    picked = json.loads((other / "best_checkpoint.json").read_text())
    assert picked["name"] == "step_20" and picked["checkpoint"].endswith("step_000000020.ckpt")
    assert "lowest validation loss" in picked["reason"]
    out = run_dir.parent / "merged"
    merge_args = ["merge.checkpoint=best", f"evaluate.output={other}", f"merge.output={out}"]
    assert run_inprocess(run_dir, finnish_data, tiny_model, "merge", *merge_args) == 0
    assert json.loads((out / "state.json").read_text())["checkpoint"] == picked["checkpoint"]
    # a pick whose adapter changed since (retrained) is ignored: best is the lowest val loss again
    rec = dict(picked, sha256="0" * 64)
    (other / "best_checkpoint.json").write_text(json.dumps(rec))
    from fishtune.config import load_config
    from fishtune.generation import resolve_checkpoint

    cfg = load_config([*TINY, f"paths.runs={run_dir.parent}", f"run_name={run_dir.name}", f"evaluate.output={other}"])
    assert resolve_checkpoint(cfg) == run_dir / "train" / "best.ckpt"

    # bad input: one line naming the file and the fix, exit 1
    capsys.readouterr()
    rc = run_inprocess(run_dir, finnish_data, tiny_model, "evaluate", "evaluate.sentences_file=/nonexistent.txt")
    err = capsys.readouterr().err
    assert rc == 1 and "evaluate.sentences_file /nonexistent.txt not found" in err and "Traceback" not in err
    rc = run_inprocess(run_dir, finnish_data, tiny_model, "evaluate", "evaluate.checkpoints=[7]")
    err = capsys.readouterr().err
    assert rc == 1 and "no checkpoint for step 7" in err and "Fix: use one of the kept steps" in err


@pytest.mark.e2e
def test_evaluate_with_whisper_computes_cer(trained_run, finnish_data, tiny_model, tmp_path):
    """A tiny random Whisper in transformers' layout: the whole ASR path runs and CER is computed per sample."""
    from tiny_whisper import write_tiny_whisper

    whisper = write_tiny_whisper(tmp_path / "whisper")
    out = tmp_path / "report"
    args = [f"evaluate.asr_model={whisper}", f"evaluate.output={out}", "evaluate.max_sentences=1"]
    assert run_inprocess(trained_run, finnish_data, tiny_model, "evaluate", *args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["asr"]["available"] is True and rep["asr"]["language"] == "fi"
    assert not any("CER not computed" in n for n in rep["notes"])
    for item in rep["samples"]:
        for r in item["results"].values():  # the reference recordings too: the ASR floor
            assert isinstance(r["transcript"], str)
            assert r["cer"] == pytest.approx(metrics.cer(item["text"], r["transcript"], "fi"), abs=1e-4)
    for s in rep["systems"]:
        cers = [i["results"][s["name"]]["cer"] for i in rep["samples"] if s["name"] in i["results"]]
        assert s["metrics"]["cer"] == pytest.approx(np.mean(cers), abs=1e-4)
    assert rep["best_checkpoint"]["metrics"]["cer"] is not None


@pytest.mark.e2e
def test_report_opens_in_chromium(evaluated, tmp_path):
    """The page loads in a real headless browser: metrics table, loss plot and every player work, no errors."""
    from headless import Browser, chromium

    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: make setup installs it (Makefile SYSTEM_PKGS)")
        pytest.skip("chromium is not installed (make setup installs it)")
    run_dir, _ = evaluated
    rep = _report(run_dir)
    with Browser() as browser:
        page = browser.open(run_dir / "report" / "index.html")
        assert page.evaluate("document.title") == f"fishtune evaluation: {run_dir.name}"
        rows = page.evaluate("[...document.querySelectorAll('#metrics tbody tr')].map(r => r.dataset.system)")
        assert rows == [s["name"] for s in rep["systems"]]
        cells = page.evaluate("[...document.querySelectorAll('#metrics tbody tr')][1].cells.length")
        assert cells == 11
        assert page.evaluate("document.querySelector('#curves svg').getBBox().width") > 100
        assert page.evaluate("document.querySelectorAll('#samples tbody tr').length") == len(rep["samples"])
        durations = page.evaluate(
            """Promise.all([...document.querySelectorAll('audio')].map(a => a.readyState >= 1 ? a.duration :
               new Promise(r => { a.addEventListener('loadedmetadata', () => r(a.duration));
                                  a.addEventListener('error', () => r(-1)); })))""",
            await_promise=True,
        )
        order = [s["name"] for s in rep["systems"]]  # players per row, in the metrics table's order
        expected = [i["results"][n]["seconds"] for i in rep["samples"] for n in order if n in i["results"]]
        assert len(durations) == len(expected)
        for got, want in zip(durations, expected, strict=True):
            assert got == pytest.approx(want, abs=0.1)  # the mp3 inside the page decodes to the sample's length
        assert "CER not computed" in page.evaluate("document.getElementById('notes').innerText")
        shot = tmp_path / "report.png"
        page.screenshot(shot)
        assert page.errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("FISHTUNE_SCREENSHOT"):  # how docs/evaluate-report.png is made
        shutil.copyfile(shot, os.environ["FISHTUNE_SCREENSHOT"])
