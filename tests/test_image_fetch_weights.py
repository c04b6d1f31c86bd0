"""docker/fetch_weights.py (the build-time weight bake) against a real local Hugging Face cache, offline.

The Hub cannot be reached here, so the cache is laid out as huggingface_hub writes it (blobs named by sha256
for large files, snapshots/<commit>/ symlinks, refs/main) and the script runs with HF_HUB_OFFLINE=1: the real
``snapshot_download`` resolves the pinned commit from the cache. Nothing is mocked.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docker" / "fetch_weights.py"
REPO = "fishaudio/openaudio-s1-mini"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_TESTtokenNeverPrinted0123456789"


def _hub_cache(root: Path, files: dict[str, bytes], commit: str = COMMIT, corrupt: str | None = None) -> Path:
    """A Hub cache holding ``files`` at ``commit``: large files as blobs named by their sha256 (as LFS files are)."""
    repo = root / ("models--" + REPO.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for rel, data in files.items():
        big = rel.endswith(".pth")
        name = hashlib.sha256(data).hexdigest() if big else hashlib.sha1(data).hexdigest()
        blob = repo / "blobs" / name
        blob.write_bytes(data + (b"!" if rel == corrupt else b""))
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return root


FILES = {
    "model.pth": b"model weights " * 1000,
    "codec.pth": b"codec weights " * 500,
    "config.json": b'{"dim": 8}',
    "tokenizer.tiktoken": b"dG9r 0\n",
    "special_tokens.json": b"{}",
    "README.md": b"# model card\n",
}


def _run(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--repo", REPO, "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_bakes_pinned_snapshot_with_sums_and_source(tmp_path):
    cache = _hub_cache(tmp_path / "hub", FILES)
    token_file = tmp_path / "hf_token"
    token_file.write_text(TOKEN + "\n")
    dest = tmp_path / "opt" / "models" / "openaudio-s1-mini"
    old_umask = os.umask(0o077)  # the strictest usual umask: the script must still leave readable files
    try:
        p = _run("--revision", COMMIT, "--dest", str(dest), "--token-file", str(token_file), cache=cache)
    finally:
        os.umask(old_umask)
    assert p.returncode == 0, p.stderr
    assert "with a token" in p.stdout
    assert TOKEN not in p.stdout + p.stderr

    # real files (no links into the cache), byte-identical
    for rel, data in FILES.items():
        assert (dest / rel).is_file() and not (dest / rel).is_symlink()
        assert (dest / rel).read_bytes() == data
    sums = dict(reversed(line.split("  ", 1)) for line in (dest / "SHA256SUMS").read_text().splitlines())
    assert sums == {rel: hashlib.sha256(data).hexdigest() for rel, data in FILES.items()}
    source = (dest / "WEIGHTS_SOURCE").read_text()
    assert source.count("\n") == 1 and f"{REPO}@{COMMIT}" in source and "baked" in source
    for f in dest.rglob("*"):
        assert TOKEN not in f.read_text(errors="ignore")
    # readable by the image's unprivileged user whatever the umask (the folder is made with mkdtemp)
    for f in [dest, *dest.rglob("*")]:
        assert f.stat().st_mode & 0o777 == (0o755 if f.is_dir() else 0o644), f
    # sha256sum -c accepts the file as written
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_doctor_reads_the_weights_source_line(tmp_path):
    """The doctor stage prints WEIGHTS_SOURCE: it must stay one short line naming the commit."""
    cache = _hub_cache(tmp_path / "hub", FILES)
    dest = tmp_path / "m"
    assert (
        _run("--revision", COMMIT, "--dest", str(dest), "--token-file", str(tmp_path / "none"), cache=cache).returncode
        == 0
    )
    line = (dest / "WEIGHTS_SOURCE").read_text().strip()
    assert "\n" not in line and len(line) < 300 and COMMIT in line


def test_unpinned_revision_is_refused_unless_allowed(tmp_path):
    cache = _hub_cache(tmp_path / "hub", FILES)
    dest = tmp_path / "m"
    p = _run("--revision", "main", "--dest", str(dest), cache=cache)
    assert p.returncode == 2 and "40-hex commit" in p.stderr and not dest.exists()
    p = _run("--revision", "main", "--dest", str(dest), "--allow-unpinned", cache=cache)
    assert p.returncode == 0, p.stderr
    # the commit the branch resolved to is what gets recorded
    assert f"{REPO}@{COMMIT}" in (dest / "WEIGHTS_SOURCE").read_text()


def test_corrupt_large_file_fails_and_leaves_nothing(tmp_path):
    cache = _hub_cache(tmp_path / "hub", FILES, corrupt="model.pth")
    dest = tmp_path / "m"
    p = _run("--revision", COMMIT, "--dest", str(dest), cache=cache)
    assert p.returncode == 1 and "model.pth" in p.stderr and "corrupt" in p.stderr
    assert not dest.exists() and not [q for q in tmp_path.iterdir() if q.name.startswith(".m.")]


def test_missing_required_file_fails(tmp_path):
    cache = _hub_cache(tmp_path / "hub", {k: v for k, v in FILES.items() if k != "codec.pth"})
    p = _run("--revision", COMMIT, "--dest", str(tmp_path / "m"), cache=cache)
    assert p.returncode == 1 and "codec.pth" in p.stderr


@pytest.mark.parametrize("revision", [COMMIT, "f" * 40])
def test_revision_not_in_cache_offline_is_a_clear_error(tmp_path, revision):
    cache = _hub_cache(tmp_path / "hub", FILES, commit="a" * 40)
    p = _run("--revision", revision, "--dest", str(tmp_path / "m"), cache=cache)
    assert p.returncode == 1 and "cannot be reached" in p.stderr, p.stderr
