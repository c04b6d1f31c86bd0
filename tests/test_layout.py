"""RunLayout: every run path from the config, the configurable outputs honoured."""

from __future__ import annotations

from pathlib import Path

from fishtune.config import load_config
from fishtune.layout import RunLayout


def test_layout_honours_the_configurable_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("FISHTUNE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("RUN_NAME", "r")
    cfg = load_config(["model=tiny", f"merge.output={tmp_path / 'm'}", f"evaluate.output={tmp_path / 'rep'}"])
    run = RunLayout.of(cfg)
    root = tmp_path / "runs" / "r"
    assert run.root == root and run.manifest == root / "clips" / "manifest.jsonl"
    assert (
        run.merged_model == tmp_path / "m" / "model.pth"
        and run.best_checkpoint == tmp_path / "rep" / "best_checkpoint.json"
    )
    assert run.samples == root / "samples" and run.raw == root / "raw"
    assert run.shards("val") == root / "packed" / "val" and run.step_checkpoint(7).name == "step_000000007.ckpt"
    assert run.relative(run.report_html) == str(tmp_path / "rep" / "index.html")  # outside the run: as given
    assert run.relative(run.lora) == "train/lora.pth"
    default = RunLayout.at(root)
    assert (
        default.model == root / "model"
        and default.state == run.state
        and default.log("train") == Path(root, "logs", "train.log")
    )
