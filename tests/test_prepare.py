"""prepare: every kind of unusable input is rejected with its reason; nothing disappears; reruns reuse work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import soundfile as sf

from conftest import run_inprocess


def _jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_rejections_by_kind(tmp_path, finnish_data, tiny_model):
    data = tmp_path / "data" / "anna"
    data.mkdir(parents=True)
    good = next(finnish_data.glob("*/lause_000.wav"))
    for i in range(8):
        shutil.copy(good, data / f"ok{i}.wav")
        (data / f"ok{i}.lab").write_text("Hyvää päivää.", encoding="utf-8")
    sf.write(data / "hiljainen.wav", np.zeros(44100, dtype=np.float32), 44100)  # digital silence
    sf.write(data / "lyhyt.wav", np.random.default_rng(0).normal(0, 0.1, 4410).astype(np.float32), 44100)  # 0.1 s
    sf.write(data / "pitka.wav", np.random.default_rng(1).normal(0, 0.1, 44100 * 31).astype(np.float32), 44100)
    (data / "latin.wav").write_bytes(good.read_bytes())
    for name in ("hiljainen", "lyhyt", "pitka"):
        (data / f"{name}.lab").write_text("Teksti.", encoding="utf-8")
    (data / "latin.lab").write_bytes("Hyvää".encode("latin-1"))
    run_dir = tmp_path / "runs" / "p"
    overrides = ("prepare.max_reject_fraction=0.5",)
    assert run_inprocess(run_dir, tmp_path / "data", tiny_model, "prepare", *overrides) == 0
    reasons = {r["id"]: r["reason"] for r in _jsonl(run_dir / "clips" / "rejected.jsonl")}
    assert reasons.keys() == {"anna/hiljainen", "anna/lyhyt", "anna/pitka", "anna/latin"}
    assert reasons["anna/hiljainen"].startswith("silent")
    assert reasons["anna/lyhyt"].startswith("too short")
    assert reasons["anna/pitka"].startswith("too long")
    assert "not UTF-8" in reasons["anna/latin"]
    manifest = _jsonl(run_dir / "clips" / "manifest.jsonl")
    assert len(manifest) == 8 and len(manifest) + len(reasons) == 12  # every input accounted for
    stats = json.loads((run_dir / "clips" / "stats.json").read_text())
    assert stats["inputs"] == 12 and stats["speakers"]["anna"]["count"] == 8

    # a removed input disappears from the outputs; a fixed one is picked up; the rest is reused
    (data / "ok7.wav").unlink()
    (data / "latin.lab").write_text("Hyvää", encoding="utf-8")
    assert run_inprocess(run_dir, tmp_path / "data", tiny_model, "prepare", *overrides) == 0
    ids = {r["id"] for r in _jsonl(run_dir / "clips" / "manifest.jsonl")}
    assert "anna/ok7" not in ids and "anna/latin" in ids
    assert not (run_dir / "clips" / "anna" / "ok7.wav").exists()
    log = (run_dir / "logs" / "prepare.log").read_text()
    assert "resuming: 10 of 11 inputs already processed" in log


def test_normaliser_is_reported(tmp_path, finnish_data, tiny_model):
    data = tmp_path / "data" / "anna"
    data.mkdir(parents=True)
    good = next(finnish_data.glob("*/lause_000.wav"))
    texts = {"a": "Olen 3. luokalla.", "b": "Hyvää päivää.", "c": "Se kesti  5 minuuttia 1990-luvulla."}
    for name, transcript in texts.items():
        shutil.copy(good, data / f"{name}.wav")
        (data / f"{name}.lab").write_text(transcript, encoding="utf-8")
    run_dir = tmp_path / "runs" / "n"
    assert run_inprocess(run_dir, tmp_path / "data", tiny_model, "prepare", "prepare.normalize=fi") == 0
    rows = {r["id"]: r for r in _jsonl(run_dir / "clips" / "manifest.jsonl")}
    assert {i: r["raw_text"] for i, r in rows.items()} == {f"anna/{k}": v for k, v in texts.items()}
    assert rows["anna/a"]["text"] == "Olen kolmannella luokalla."
    assert rows["anna/a"]["text_rules"] == ["ordinal"]
    assert rows["anna/b"]["text"] == "Hyvää päivää." and rows["anna/b"]["text_rules"] == []
    assert rows["anna/c"]["text"] == "Se kesti viisi minuuttia tuhatyhdeksänsataayhdeksänkymmentäluvulla."
    assert rows["anna/c"]["text_rules"] == ["clean", "compound", "cardinal"]
    assert (run_dir / "clips" / "anna" / "a.lab").read_text(encoding="utf-8") == "Olen kolmannella luokalla.\n"
    stats = json.loads((run_dir / "clips" / "stats.json").read_text())
    assert stats["normalizer"] == {
        "changed": 2,
        "unchanged": 1,
        "rules": {"cardinal": 1, "clean": 1, "compound": 1, "ordinal": 1},
    }
