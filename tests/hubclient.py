"""What the Hub tests share: no token or endpoint from the machine running them, the fetch stage run in process
against the stand-in Hub (tests/hubserver.py), and a search of a folder tree for a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_inprocess

REPO = "fishaudio/openaudio-s1-mini"


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN_FILE", str(tmp_path / "no-token-file"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def model_files(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}


def hub_args(hub, tmp_path: Path, dest: Path, *extra: str) -> list[str]:
    return [
        f"model.path={dest}",
        f"model.repo_id={REPO}",
        f"hub.endpoint={hub.url}",
        f"hub.cache_dir={tmp_path / 'hf-cache'}",
        *extra,
    ]


def fetch(run_dir: Path, data: Path, *overrides: str) -> int:
    # run_inprocess passes model.path first; ours (later) wins
    return run_inprocess(run_dir, data, Path("/nonexistent"), "fetch", *overrides)


def grep_tree(root: Path, needle: str) -> list[Path]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and needle.encode() in p.read_bytes():
            hits.append(p)
    return hits
