"""The locked environment: the pinned versions are the ones installed, and Fish Speech's modules import."""

from __future__ import annotations

import importlib
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("dist", "version"),
    [
        ("torch", "2.9.1"),
        ("torchaudio", "2.9.1"),
        ("torchcodec", "0.8.1"),
        ("protobuf", "3.20.3"),
        ("fish-speech", "0.1.0"),
        ("hydra-core", "1.3.2"),
    ],
)
def test_pinned_versions_installed(dist, version):
    assert metadata.version(dist).split("+")[0] == version


@pytest.mark.parametrize(
    "module",
    [
        "fish_speech.tokenizer",
        "fish_speech.content_sequence",
        "fish_speech.models.text2semantic.llama",
        "fish_speech.models.text2semantic.lora",
        "fish_speech.models.text2semantic.inference",
        "fish_speech.models.dac.modded_dac",
        "fish_speech.models.dac.rvq",
        "torchcodec.decoders",
        "lightning",
        "torch.utils.tensorboard",  # tensorboard's generated protos must work with protobuf 3.20.3
        "fishtune.proto.text_data_pb2",
    ],
)
def test_modules_we_use_import(module):
    importlib.import_module(module)


@pytest.mark.parametrize("dist", ["gradio", "wandb", "modelscope", "pyaudio", "datasets", "silero-vad"])
def test_fish_speech_installed_without_its_heavy_dependencies(dist):
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version(dist)


def test_lock_matches_installed_environment():
    """Every package in uv.lock that applies to this Python is installed at exactly the locked version."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in metadata.distributions()}
    locked: dict[str, set[str]] = {}
    for pkg in lock["package"]:
        if pkg["name"] != "fishtune" and "version" in pkg:
            locked.setdefault(pkg["name"], set()).add(pkg["version"])  # one per Python version at most
    checked = 0
    for name, versions in locked.items():
        if name in installed:
            assert installed[name].split("+")[0] in versions, f"{name}: {installed[name]} not in lock {versions}"
            checked += 1
    assert checked > 100  # the whole stack, not a handful


def test_pyproject_pins_protobuf_for_everyone():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "protobuf==3.20.3" in project["project"]["dependencies"]
    assert "protobuf==3.20.3" in project["tool"]["uv"]["override-dependencies"]
