"""Reproducibility: the Python environment inside a built image is exactly what uv.lock pins.

Every build installs from the lock with ``uv sync --frozen``, so two builds give the same environment exactly
when each equals the lock. The installed distributions (what ``pip freeze`` lists; the image has no pip) are
read inside the image and compared, name and version, with ``uv export --frozen --no-dev`` evaluated for the
image's Python and platform: nothing missing, nothing extra, no other version.

Needs a built image and a container engine, so it runs only when asked:
``FISHTUNE_IMAGE=localhost/fishtune:dev pytest tests/test_image_lock.py`` (``make image-test`` does).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("FISHTUNE_IMAGE")

pytestmark = pytest.mark.skipif(not IMAGE, reason="set FISHTUNE_IMAGE to a built image (make image-test does)")

PROBE = r"""
import importlib.metadata as md, json, os, platform, sys
def norm(n): return __import__("re").sub(r"[-_.]+", "-", n).lower()
env = {
    "implementation_name": sys.implementation.name,
    "implementation_version": platform.python_version(),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
dists = {}
for d in md.distributions(path=[p for p in sys.path if p.startswith("/opt/venv")]):
    dists[norm(d.metadata["Name"])] = d.version
print(json.dumps({"env": env, "dists": dists, "prefix": sys.prefix}))
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _uv() -> list[str]:
    if shutil.which("uv"):
        return ["uv"]
    for py in (sys.executable, "python3"):
        if subprocess.run([py, "-m", "uv", "--version"], capture_output=True).returncode == 0:
            return [py, "-m", "uv"]
    pytest.fail("uv is needed to export the lock (pip install uv==0.13.9)")


def _image_environment(tmp_path) -> dict:
    sys.path.insert(0, str(ROOT / "docker"))
    try:
        from smoke_test import Image, engine_name
    finally:
        sys.path.pop(0)
    img = Image(IMAGE, engine_name(), tmp_path)
    try:
        p = img.run(["python", "-c", PROBE], {}, entrypoint=False, timeout=300)
    finally:
        img.close()
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _locked(env: dict) -> dict[str, str]:
    from packaging.markers import Marker

    out = subprocess.run(
        [
            *_uv(),
            "export",
            "--frozen",
            "--no-dev",
            "--no-emit-project",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--format",
            "requirements-txt",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins = {}
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        req, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(env):
            continue
        name, _, version = req.strip().partition("==")
        assert version, f"unpinned line in uv export: {line}"
        pins[_norm(name.split("[")[0])] = version.strip()
    return pins


def test_image_python_environment_equals_the_lock(tmp_path):
    probe = _image_environment(tmp_path)
    assert probe["prefix"] == "/opt/venv"
    installed = {k: v for k, v in probe["dists"].items() if k != "fishtune"}
    locked = _locked(probe["env"])
    missing = sorted(set(locked) - set(installed))
    extra = sorted(set(installed) - set(locked))
    wrong = sorted(
        f"{k} {installed[k]} != {locked[k]}" for k in set(locked) & set(installed) if installed[k] != locked[k]
    )
    assert not (missing or extra or wrong), f"missing {missing}\nextra {extra}\nother versions {wrong}"
    assert installed["torch"].startswith("2.9.1") and installed["protobuf"] == "3.20.3"
    freeze = "".join(f"{k}=={v}\n" for k, v in sorted(installed.items()))
    print(f"{len(installed)} distributions, freeze sha256 {hashlib.sha256(freeze.encode()).hexdigest()}")
