"""No code runs from data: a crafted pickle and a crafted codec YAML, given through every entry point that reads
such files, must not create their canary file, and the stage must fail with a line naming the file.

Each crafted file is proven live first: loading it the unsafe way (``torch.load(weights_only=False)``, Hydra's
``instantiate`` on the YAML) does create the canary, so a test that passes means the entry point refused it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import HUB_TOKEN, run_inprocess

pytestmark = pytest.mark.slow


class _Payload:
    """Unpickling this calls ``open(canary, "w")``: the smallest real code execution, no shell needed."""

    def __init__(self, canary: Path):
        self.canary = str(canary)

    def __reduce__(self):
        return (open, (self.canary, "w"))


def crafted_pickle(path: Path, canary: Path, tensors: dict | None = None) -> Path:
    """A ``.pth`` that looks like an adapter (or model weights) and runs code when unpickled unsafely."""
    payload = {"lora_A": torch.zeros(2, 2), "lora_B": torch.zeros(2, 2)} if tensors is None else dict(tensors)
    torch.save({"state_dict": payload, "hook": _Payload(canary)}, path)
    return path


def crafted_yaml(path: Path, canary: Path) -> Path:
    """A codec config that, instantiated by Hydra, writes the canary (``builtins.open``)."""
    path.write_text(
        "_target_: fish_speech.models.dac.modded_dac.DAC\n"
        f"quantizer:\n  _target_: builtins.open\n  _args_: ['{canary}', 'w']\n"
    )
    return path


def test_crafted_files_really_run_code_when_loaded_unsafely(tmp_path):
    """The control: without fishtune's guards both files execute (so the tests below can fail)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    canary = tmp_path / "canary"
    torch.load(crafted_pickle(tmp_path / "x.pth", canary), weights_only=False)
    assert canary.exists()
    canary.unlink()
    cfg = OmegaConf.load(crafted_yaml(tmp_path / "c.yaml", canary))
    instantiate(cfg.quantizer)
    assert canary.exists()


def _fails_naming(capsys, code: int, name: str, canary: Path) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 1 and len(lines) == 1, err[-2000:]
    assert name in lines[0], lines[0]
    assert "Traceback" not in err
    assert not canary.exists(), "the crafted file ran code"
    return lines[0]


@pytest.mark.parametrize(
    ("stage", "option"),
    [
        ("train", "train.init_lora"),
        ("merge", "merge.checkpoint"),
        ("evaluate", "evaluate.checkpoints"),
        ("synthesize", "merge.checkpoint"),  # synthesize.model=lora: base + that adapter
    ],
)
def test_crafted_adapter_is_refused(tmp_path, fresh_run, finnish_data, tiny_model, capsys, stage, option):
    canary = tmp_path / "canary"
    evil = crafted_pickle(tmp_path / "shared-lora.pth", canary)
    value = f"[{evil}]" if option == "evaluate.checkpoints" else str(evil)
    extra = ["synthesize.model=lora"] if stage == "synthesize" else []
    capsys.readouterr()
    code = run_inprocess(fresh_run, finnish_data, tiny_model, stage, f"{option}={value}", *extra)
    line = _fails_naming(capsys, code, str(evil), canary)
    assert "it is not plain data: loading it would call io.open" in line and "was refused" in line


def test_crafted_checkpoint_in_the_run_is_not_resumed_from(tmp_path, fresh_run, finnish_data, tiny_model):
    """A ``step_*.ckpt`` dropped into train/checkpoints (e.g. pulled from a shared hub-sync repo) is set aside as
    corrupt; training starts fresh and no code runs (Lightning's own loader would have unpickled it)."""
    canary = tmp_path / "canary"
    ckdir = fresh_run / "train" / "checkpoints"
    ckdir.mkdir(parents=True)
    crafted_pickle(ckdir / "step_000000005.ckpt", canary)
    steps = ["train.max_steps=2", "train.val_every=2", "train.ckpt_every=2"]
    assert run_inprocess(fresh_run, finnish_data, tiny_model, "train", *steps) == 0
    assert not canary.exists()
    assert (ckdir / "step_000000005.ckpt.corrupt").is_file()
    assert json.loads((fresh_run / "train" / "summary.json").read_text())["resumed_from"] is None


def _evil_model(tmp_path: Path, tiny_model: Path, canary: Path, what: str) -> Path:
    folder = tmp_path / f"model-{what}"
    shutil.copytree(tiny_model, folder)
    if what == "pickle":
        weights = torch.load(folder / "model.pth", weights_only=True)
        crafted_pickle(folder / "model.pth", canary, weights)
    else:
        crafted_yaml(folder / "codec_config.yaml", canary)
    return folder


@pytest.mark.parametrize(
    ("stage", "what", "extra"),
    [
        ("train", "pickle", ["train.max_steps=1"]),
        ("synthesize", "pickle", ["synthesize.model=base"]),
        ("extract", "yaml", []),
        ("synthesize", "yaml", ["synthesize.model=base"]),
    ],
)
def test_crafted_model_folder_is_refused(tmp_path, fresh_run, finnish_data, tiny_model, capsys, stage, what, extra):
    canary = tmp_path / "canary"
    folder = _evil_model(tmp_path, tiny_model, canary, what)
    if stage == "extract":
        shutil.rmtree(fresh_run / "tokens")
    capsys.readouterr()
    code = run_inprocess(fresh_run, finnish_data, tiny_model, stage, f"model.path={folder}", *extra)
    name = folder / ("model.pth" if what == "pickle" else "codec_config.yaml")
    line = _fails_naming(capsys, code, str(name), canary)
    if what == "yaml":
        assert "quantizer._target_ names 'builtins.open'" in line


@pytest.mark.parametrize("what", ["pickle", "yaml"])
def test_fetch_refuses_a_model_repo_that_would_run_code(
    tmp_path, fake_hub, tiny_model, finnish_data, capsys, monkeypatch, what
):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("HF_TOKEN_FILE", str(tmp_path / "no-token-file"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    canary = tmp_path / "canary"
    folder = _evil_model(tmp_path, tiny_model, canary, what)
    repo = "someone/shared-voice"
    fake_hub.add_repo(repo, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
    dest = tmp_path / "models" / "shared"
    capsys.readouterr()
    code = run_inprocess(
        tmp_path / "runs" / "r",
        finnish_data,
        dest,
        "fetch",
        f"model.repo_id={repo}",
        f"hub.endpoint={fake_hub.url}",
        f"hub.cache_dir={tmp_path / 'hf-cache'}",
        "fetch.model=auto",
    )
    name = "model.pth" if what == "pickle" else "codec_config.yaml"
    _fails_naming(capsys, code, name, canary)
    assert not dest.exists(), "nothing of the refused repo is installed"
