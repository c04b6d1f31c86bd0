"""Shared fixtures: the tiny model, the espeak-ng Finnish dataset, and a way to run the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "entrypoint.py"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from fishtune.modeling.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def finnish_data(tmp_path_factory) -> Path:
    """12 espeak-ng Finnish clips (wav, stereo mp3, flac) + 3 broken inputs, in the fish folder layout."""
    from fishtune.demo import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "fi", clips=12, broken=True)


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class Runner:
    """Runs ``python entrypoint.py`` in a subprocess with the run's environment, as a user would."""

    def __init__(self, tmp: Path, data: Path, model: Path):
        self.tmp = tmp
        self.env = {
            **os.environ,
            "FISHTUNE_DATA": str(data),
            "FISHTUNE_RUNS": str(tmp / "runs"),
            "FISHTUNE_CACHE": str(tmp / "cache"),
            "FISHTUNE_MODEL": str(model),
            "RUN_NAME": "test",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("STAGE", None)
        self.run_dir = tmp / "runs" / "test"

    def __call__(self, *args: str, env: dict | None = None, check: bool = True, timeout: int = 600):
        proc = subprocess.run(
            [sys.executable, str(ENTRYPOINT), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(ENTRYPOINT), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


@pytest.fixture
def runner(tmp_path, finnish_data, tiny_model) -> Runner:
    return Runner(tmp_path, finnish_data, tiny_model)


TINY = ["model=tiny", "preset=tiny"]


def stage_args(run_dir: Path, data: Path, model: Path, stage: str, *overrides: str) -> list[str]:
    """Entrypoint arguments running ``stage`` on the tiny preset with every path inside ``run_dir``'s parent."""
    return [
        stage,
        *TINY,
        f"paths.data={data}",
        f"paths.runs={run_dir.parent}",
        f"run_name={run_dir.name}",
        f"paths.cache={run_dir.parent / 'cache'}",
        f"model.path={model}",
        *overrides,
    ]


def stage_cmd(run_dir: Path, data: Path, model: Path, stage: str, *overrides: str) -> list[str]:
    """The same as a subprocess command line (for kill tests)."""
    return [sys.executable, str(ENTRYPOINT), *stage_args(run_dir, data, model, stage, *overrides)]


def run_inprocess(run_dir: Path, data: Path, model: Path, stage: str, *overrides: str) -> int:
    """Run stages in this process (faster than a subprocess); their logs are in ``run_dir/logs``."""
    from fishtune import cli

    return cli.main(stage_args(run_dir, data, model, stage, *overrides))


@pytest.fixture(scope="session")
def packed_run(tmp_path_factory, finnish_data, tiny_model) -> Path:
    """A run directory after prepare -> extract -> pack on the espeak-ng Finnish clips (made once)."""
    run_dir = tmp_path_factory.mktemp("packed") / "runs" / "base"
    assert run_inprocess(run_dir, finnish_data, tiny_model, "prepare,extract,pack") == 0
    return run_dir


@pytest.fixture
def fresh_run(tmp_path, packed_run) -> Path:
    """A private copy of ``packed_run`` for one test."""
    return copy_run(packed_run, tmp_path / "runs" / "t")


def copy_run(src: Path, dst: Path, skip: tuple[str, ...] = ("train", "model", "samples")) -> Path:
    """Copy a run directory without the top-level outputs named in ``skip``."""
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if Path(d) == src and n in skip])
    return dst


@pytest.fixture
def fake_hub():
    """A stand-in for the Hugging Face Hub on 127.0.0.1 (tests/hubserver.py), for the real huggingface_hub client."""
    from hubserver import FakeHub

    hub = FakeHub(tokens={HUB_TOKEN})
    yield hub
    hub.stop()


HUB_TOKEN = "hf_fishtuneTESTtokenMustNeverLeak0123"  # the token FakeHub accepts; tests grep for it afterwards
