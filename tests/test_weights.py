"""The one installer of base weights (src/fishtune/weights.py), used by the fetch stage and the image build.

Against a local stand-in for the Hugging Face Hub (tests/hubserver.py: the Hub's HTTP API, Range requests, the
302 to a CDN for large files, gated repos, bad tokens): the fetch stage end to end, and the command the image's
weights stage runs, from a copy of the two stdlib-only modules on a Python without site-packages, as in the
image. Nothing in fishtune is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENTRYPOINT, HUB_TOKEN, TINY
from hubclient import (
    REPO,
    fetch,
    grep_tree,
    hub_args,
    model_files,
    no_ambient_token,  # noqa: F401 (autouse fixture)
)

ROOT = Path(__file__).resolve().parents[1]


# -- the fetch stage ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fetch_base_weights_pinned_checked_and_idempotent(tmp_path, fake_hub, tiny_model, finnish_data, monkeypatch):
    files = model_files(tiny_model)
    commit = fake_hub.add_repo(REPO, files)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    run_dir = tmp_path / "runs" / "r"
    dest = tmp_path / "models" / "s1"
    assert fetch(run_dir, finnish_data, *hub_args(fake_hub, tmp_path, dest, f"model.revision={commit}")) == 0

    for name, data in files.items():  # real files, byte-identical
        assert (dest / name).read_bytes() == data and not (dest / name).is_symlink()
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    source = (dest / "WEIGHTS_SOURCE").read_text()
    assert source.count("\n") == 1 and f"{REPO}@{commit}" in source
    assert {r["token"] for r in fake_hub.requests} == {HUB_TOKEN}  # the token was sent ...
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"]["fetch"]["model"]["commit"] == commit

    # second run: weights present -> nothing is downloaded (a no-op, like STAGE=all offline)
    n = len(fake_hub.requests)
    assert fetch(run_dir, finnish_data, *hub_args(fake_hub, tmp_path, dest)) == 0
    assert len(fake_hub.requests) == n
    assert "nothing to fetch" in (run_dir / "logs" / "fetch.log").read_text()

    # ... and never written down: logs, status.json, state.json, summary, the model folder
    assert not grep_tree(run_dir, HUB_TOKEN) and not grep_tree(dest, HUB_TOKEN)
    assert "Hugging Face token: $HF_TOKEN" in (run_dir / "logs" / "fetch.log").read_text()

    # offline: a new model folder from the filled cache, HF_HUB_OFFLINE=1, no server involved
    fake_hub.stop()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FISHTUNE_RUNS": str(tmp_path / "runs"), "RUN_NAME": "offline"}
    env.pop("HF_TOKEN", None)
    cmd = [sys.executable, str(ENTRYPOINT), "fetch", *TINY, f"paths.data={finnish_data}"]
    cache = f"hub.cache_dir={tmp_path / 'hf-cache'}"
    offline = tmp_path / "models" / "offline"
    args = [f"model.path={offline}", f"model.repo_id={REPO}", f"model.revision={commit}", cache]
    p = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (offline / "model.pth").read_bytes() == files["model.pth"]
    # a revision the cache does not hold: one clear line, exit 1
    args = [f"model.path={tmp_path / 'x'}", f"model.repo_id={REPO}", f"model.revision={'f' * 40}", cache]
    p = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "HF_HUB_OFFLINE=1 forbids downloading" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_corrupt_download_is_refused_then_fetched_again(tmp_path, fake_hub, tiny_model, finnish_data, capsys):
    fake_hub.add_repo(REPO, model_files(tiny_model))
    fake_hub.corrupt.add("model.pth")
    dest = tmp_path / "m"
    args = hub_args(fake_hub, tmp_path, dest)
    assert fetch(tmp_path / "runs" / "r", finnish_data, *args) == 1
    assert "model.pth is corrupt" in capsys.readouterr().err and not dest.exists()
    fake_hub.corrupt.clear()  # the next run downloads the removed file again and succeeds
    assert fetch(tmp_path / "runs" / "r", finnish_data, *args) == 0
    assert (dest / "model.pth").read_bytes() == (tiny_model / "model.pth").read_bytes()


@pytest.mark.slow
def test_interrupted_download_resumes(tmp_path, fake_hub, tiny_model, finnish_data):
    """kill -9 in the middle of a large download; the rerun continues the partial file with an HTTP Range request."""
    files = model_files(tiny_model)
    big = os.urandom(24 << 20)  # > huggingface_hub's 10 MiB write chunk, so a partial file exists mid-download
    files["extra.bin"] = big
    fake_hub.add_repo(REPO, files)
    fake_hub.throttle["extra.bin"] = 12 << 20  # bytes/s: about 2 s for the file
    dest = tmp_path / "m"
    cache = tmp_path / "hf-cache"
    cmd = [
        sys.executable,
        str(ENTRYPOINT),
        "fetch",
        *TINY,
        f"paths.data={finnish_data}",
        f"paths.runs={tmp_path / 'runs'}",
        *hub_args(fake_hub, tmp_path, dest),
    ]
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    partial: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        partial = [p for p in cache.rglob("*.incomplete") if p.stat().st_size >= 10 << 20]
        if partial:
            break
        time.sleep(0.02)
    proc.kill()  # SIGKILL
    proc.wait()
    assert partial, "the kill should land while extra.bin is half downloaded"
    assert not (dest / "extra.bin").exists()
    done = partial[0].stat().st_size
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    ranges = [r["range"] for r in fake_hub.seen("GET", "extra.bin") if r["range"]]
    assert ranges and int(ranges[-1].split("=")[1].rstrip("-")) == done >= 10 << 20
    assert hashlib.sha256((dest / "extra.bin").read_bytes()).digest() == hashlib.sha256(big).digest()
    assert not list(cache.rglob("*.incomplete"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "rc"),
    [
        (f"{HUB_TOKEN}\n# my Hugging Face token, read-only\n", 0),
        (f"# comment\n{HUB_TOKEN}\nhf_secondTOKENline12345\n", 1),
    ],
    ids=["comment line", "two tokens"],
)
def test_token_file_with_a_second_line_never_leaks(tmp_path, fake_hub, tiny_model, content, rc):
    fake_hub.add_repo(REPO, model_files(tiny_model))
    token_file = tmp_path / "hf_token"
    token_file.write_text(content)
    env = {**os.environ, "HF_TOKEN_FILE": str(token_file), "FISHTUNE_RUNS": str(tmp_path / "runs"), "RUN_NAME": "t"}
    dest = tmp_path / "models" / "s1"
    cmd = [sys.executable, str(ENTRYPOINT), "fetch", *TINY, *hub_args(fake_hub, tmp_path, dest)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == rc, p.stderr
    if rc == 0:  # the comment is not part of the token: the Hub got exactly the token
        assert {r["token"] for r in fake_hub.requests} == {HUB_TOKEN} and (dest / "model.pth").is_file()
    else:
        assert f"{token_file} holds 2 lines that are not comments" in p.stderr and not fake_hub.requests
    for secret in (HUB_TOKEN, "hf_secondTOKENline12345"):
        assert secret not in p.stdout + p.stderr and not grep_tree(tmp_path / "runs", secret)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing", "not found, or it is private"),
        ("gated", "is gated"),
        ("bad token", "rejected the token"),
        ("no revision", "revision 'v9' does not exist"),
    ],
)
def test_hub_refusals_are_one_clear_line(
    tmp_path, fake_hub, tiny_model, finnish_data, monkeypatch, capsys, case, expect
):
    files = model_files(tiny_model)
    fake_hub.add_repo(REPO, files)
    fake_hub.add_repo("fishaudio/gated", files, gated=True)
    dest = tmp_path / "m"
    extra = {
        "missing": ["model.repo_id=nobody/nothing"],
        "gated": ["model.repo_id=fishaudio/gated"],
        "bad token": [],
        "no revision": ["model.revision=v9"],
    }[case]
    bad = "hf_THISisNOTtheRIGHTtoken42"
    if case == "bad token":
        monkeypatch.setenv("HF_TOKEN", bad)
    capsys.readouterr()
    rc = fetch(tmp_path / "runs" / "r", finnish_data, *hub_args(fake_hub, tmp_path, dest), *extra)
    err = capsys.readouterr().err
    assert rc == 1 and expect in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Fix:" in err
    assert not dest.exists()
    assert bad not in err and not grep_tree(tmp_path / "runs", bad)


# -- the image build's command: the same module on a bare Python ------------------------------------------------
FILES = {
    "model.pth": os.urandom(12 << 20),  # large: above the installer's 10 MiB "needs a pin" line
    "codec.pth": b"codec weights " * 500,
    "config.json": b'{"dim": 8}',
    "tokenizer.tiktoken": b"dG9r 0\n",
    "special_tokens.json": b"{}",
    "README.md": b"# model card\n",
}


@pytest.fixture(scope="module")
def installer(tmp_path_factory) -> Path:
    """What the Dockerfile's weights stage copies: weights.py and errors.py in a bare ``fishtune`` package."""
    root = tmp_path_factory.mktemp("installer")
    (root / "fishtune").mkdir()
    for name in ("weights.py", "errors.py"):
        shutil.copy(ROOT / "src" / "fishtune" / name, root / "fishtune" / name)
    (root / "fishtune" / "__init__.py").touch()
    return root


def _bake(installer: Path, hub, tmp_path: Path, *args: str, token: str | None = HUB_TOKEN, env=None):
    token_file = tmp_path / "hf_token"
    if token:
        token_file.write_text(token + "\n")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    full |= {"PYTHONPATH": str(installer)} | (env or {})
    # -S: no site-packages at all (neither huggingface_hub nor fishtune's dependencies), as python3 in the image
    cmd = [sys.executable, "-S", "-s", "-m", "fishtune.weights", "--repo", REPO, "--token-file", str(token_file)]
    cmd += ["--cache-dir", str(tmp_path / "cache"), *(["--endpoint", hub.url] if hub else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=tmp_path, timeout=120)


def _pins(tmp_path: Path, **pins: bytes) -> Path:
    lines = [
        "name: test",
        "files:                  # pins",
        *(f"  {n}: {{sha256: {hashlib.sha256(d).hexdigest()}, bytes: {len(d)}}}" for n, d in pins.items()),
        "verify_files: true",
    ]
    path = tmp_path / "pins.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_image_bake_from_a_bare_python_through_the_cdn_redirect(tmp_path, fake_hub, installer):
    commit = fake_hub.add_repo(REPO, FILES, gated=True)
    fake_hub.redirect_lfs = True
    dest = tmp_path / "opt" / "models" / "s1"
    p = _bake(installer, fake_hub, tmp_path, "--revision", commit, "--dest", str(dest))
    assert p.returncode == 0, p.stderr
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data and not (dest / name).is_symlink()
        assert (dest / name).stat().st_mode & 0o777 == 0o644
    assert dest.stat().st_mode & 0o777 == 0o755
    sums = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=dest, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    line = (dest / "WEIGHTS_SOURCE").read_text()
    assert line == f"baked into the image: {REPO}@{commit}, {len(FILES)} files, sha256 in SHA256SUMS\n"
    # the token went to the Hub, never to the CDN host (which refuses it, like a signed S3 URL)
    cdn = fake_hub.seen("GET", "/cdn/")
    assert cdn and all(r["token"] is None for r in cdn)
    assert {r["token"] for r in fake_hub.requests if not r["path"].startswith("/cdn/")} == {HUB_TOKEN}
    assert HUB_TOKEN not in p.stdout + p.stderr and not grep_tree(dest, HUB_TOKEN)


def test_branch_needs_pins_for_large_files(tmp_path, fake_hub, installer):
    commit = fake_hub.add_repo(REPO, FILES)
    dest = tmp_path / "m"
    p = _bake(installer, fake_hub, tmp_path, "--revision", "main", "--dest", str(dest))
    assert p.returncode == 1 and "model.pth has no sha256 pin" in p.stderr and not dest.exists(), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    pins = _pins(tmp_path, **{"model.pth": FILES["model.pth"]})
    p = _bake(installer, fake_hub, tmp_path, "--revision", "main", "--pins", str(pins), "--dest", str(dest))
    assert p.returncode == 0, p.stderr
    assert f"{REPO}@{commit}" in (dest / "WEIGHTS_SOURCE").read_text()  # the commit main resolved to
    p = _bake(installer, fake_hub, tmp_path, "--revision", "main", "--allow-unpinned", "--dest", str(tmp_path / "u"))
    assert p.returncode == 0, p.stderr


def test_pin_mismatch_and_corrupt_download_fail_and_leave_nothing(tmp_path, fake_hub, installer):
    commit = fake_hub.add_repo(REPO, FILES)
    dest = tmp_path / "m"
    wrong = _pins(tmp_path, **{"codec.pth": b"another codec"})
    p = _bake(installer, fake_hub, tmp_path, "--revision", commit, "--pins", str(wrong), "--dest", str(dest))
    assert p.returncode == 1 and "codec.pth is corrupt" in p.stderr and "pinned" in p.stderr, p.stderr
    assert not dest.exists() and not [q for q in tmp_path.iterdir() if q.name.startswith(".m.")]
    shutil.rmtree(tmp_path / "cache")  # (model.pth, checked against the Hub's sha256, would be used from it)
    fake_hub.corrupt.add("model.pth")
    p = _bake(installer, fake_hub, tmp_path, "--revision", commit, "--dest", str(dest))
    assert p.returncode == 1 and "model.pth is corrupt" in p.stderr and "differs from the Hub's" in p.stderr
    assert not dest.exists() and not list((tmp_path / "cache").rglob("model.pth"))  # removed from the cache
    fake_hub.corrupt.clear()
    p = _bake(installer, fake_hub, tmp_path, "--revision", commit, "--dest", str(dest))
    assert p.returncode == 0 and (dest / "model.pth").read_bytes() == FILES["model.pth"], p.stderr


def test_missing_required_file_and_unknown_revision(tmp_path, fake_hub, installer):
    commit = fake_hub.add_repo(REPO, {k: v for k, v in FILES.items() if k != "codec.pth"})
    p = _bake(installer, fake_hub, tmp_path, "--revision", commit, "--dest", str(tmp_path / "m"))
    assert p.returncode == 1 and "lacks codec.pth" in p.stderr, p.stderr
    p = _bake(installer, fake_hub, tmp_path, "--revision", "f" * 40, "--dest", str(tmp_path / "m"))
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr
    p = _bake(
        installer,
        None,
        tmp_path,
        "--revision",
        commit,
        "--dest",
        str(tmp_path / "m"),
        env={"HF_ENDPOINT": "http://127.0.0.1:9"},
    )  # nothing listens on the discard port
    assert p.returncode == 1 and "not reachable" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_rebake_offline_from_the_cache_mount(tmp_path, fake_hub, installer):
    commit = fake_hub.add_repo(REPO, FILES)
    pins = _pins(tmp_path, **{"model.pth": FILES["model.pth"]})
    assert (
        _bake(
            installer, fake_hub, tmp_path, "--revision", "main", "--pins", str(pins), "--dest", str(tmp_path / "a")
        ).returncode
        == 0
    )
    fake_hub.stop()
    p = _bake(
        installer,
        None,
        tmp_path,
        "--revision",
        "main",
        "--pins",
        str(pins),
        "--dest",
        str(tmp_path / "b"),
        env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert p.returncode == 0, p.stderr
    assert f"@{commit}," in (tmp_path / "b" / "WEIGHTS_SOURCE").read_text()


def test_pins_are_the_configsmodel_files(tmp_path):
    """The image reads model.files without a YAML library: it must read what OmegaConf reads, or refuse."""
    from omegaconf import OmegaConf

    from fishtune import weights
    from fishtune.modeling import files

    for name in ("s1-mini", "tiny"):
        path = ROOT / "configs" / "model" / f"{name}.yaml"
        want = {k: dict(v) for k, v in OmegaConf.to_container(OmegaConf.load(path))["files"].items()}
        assert weights.read_pins(path) == want
    assert set(weights.read_pins(ROOT / "configs" / "model" / "s1-mini.yaml")) == {"model.pth", "codec.pth"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("files:\n  model.pth:\n    sha256: abc\n")
    with pytest.raises(weights.WeightsError, match=r"bad.yaml:2: cannot read this model.files pin"):
        weights.read_pins(bad)
    assert set(weights.REQUIRED) == set(files.REQUIRED)
