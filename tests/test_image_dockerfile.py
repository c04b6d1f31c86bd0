"""Static checks of the Dockerfile and the workflows (no container engine needed).

What a build would only reveal late or never: label defaults drifting from uv.lock, the token leaking into
the history through an ARG/ENV, a layer order that reinstalls torch on every code change, unpinned actions.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _arg_defaults() -> dict[str, str]:
    return dict(
        m.groups() for kind, rest in _instructions() if kind == "ARG" for m in [re.match(r"(\w+)=(\S*)", rest)] if m
    )


def _lock() -> dict[str, str]:
    return {p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}


def test_label_version_defaults_match_the_lock():
    args, lock = _arg_defaults(), _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert args["VERSION"] == project["version"]
    assert args["TORCH_VERSION"] == lock["torch"]
    assert args["TORCHCODEC_VERSION"] == lock["torchcodec"]
    assert args["PROTOBUF_VERSION"] == lock["protobuf"] == "3.20.3"
    assert args["FISH_SPEECH_VERSION"] == lock["fish-speech"]


def test_uv_in_the_image_is_the_makefile_pin():
    pinned = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    reqs = (ROOT / "docker" / "uv-requirements.txt").read_text()
    assert f"uv=={pinned} " in reqs and reqs.count("--hash=sha256:") >= 2


def test_runtime_contract():
    ins = _instructions()
    assert ("ENTRYPOINT", '["python", "/app/entrypoint.py"]') in ins
    env = " ".join(rest for kind, rest in ins if kind == "ENV")
    for kv in (
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
    ):
        assert kv in env
    assert ("VOLUME", '["/data", "/runs", "/cache"]') in ins
    users = [rest for kind, rest in ins if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    # the smallest base: torch's wheels bring the CUDA libraries; pinned by digest when refreshed
    assert re.fullmatch(r"ubuntu:24\.04(@sha256:[0-9a-f]{64})?", _arg_defaults()["BASE_IMAGE"])
    assert "cudnn" not in _arg_defaults()["BASE_IMAGE"]
    # docker stop and Kubernetes send SIGTERM, which the entrypoint handles (tests/test_pid1_signals.py)
    assert all(rest in ("SIGTERM", "15") for kind, rest in ins if kind == "STOPSIGNAL")


def test_weights_are_their_own_layer_below_the_environment():
    """Baked weights: fetched by the stdlib-only installer in a stage of their own (no torch environment), copied
    with --link into a layer below uv.lock's, so neither a lock nor a code change refetches or re-pushes them."""
    ins = _instructions()
    stages = {m.group(2): m.group(1) for k, r in ins if k == "FROM" for m in [re.match(r"(\S+) AS (\S+)", r)] if m}
    assert stages["weights-fetch"] == "base" and stages["weights-openaudio-s1-mini"] == "base"
    assert stages["deps"] == "weights-${WEIGHTS}" and stages["app"] == "deps"
    link = [r for k, r in ins if k == "COPY" and r.startswith("--link --from=weights-fetch")]
    assert link == ["--link --from=weights-fetch /opt/models/openaudio-s1-mini /opt/models/openaudio-s1-mini"]
    fetch_copies = [r for k, r in ins if k == "COPY" and "/opt/installer/" in r]
    assert fetch_copies == [
        "src/fishtune/weights.py src/fishtune/errors.py /opt/installer/fishtune/",
        "${WEIGHTS_PINS} /opt/installer/pins.yaml",
    ]
    defaults = _arg_defaults()
    assert defaults["WEIGHTS_REVISION"] and defaults["WEIGHTS_PINS"] == "configs/model/s1-mini.yaml"
    bake = next(r for k, r in ins if k == "RUN" and "fishtune.weights" in r)
    assert "--pins /opt/installer/pins.yaml" in bake and '--revision "$WEIGHTS_REVISION"' in bake
    # the image with the weights carries their licence
    assert 'org.opencontainers.image.licenses="Apache-2.0 AND CC-BY-NC-SA-4.0"' in DOCKERFILE
    assert 'io.github.fishtune.weights-license="CC-BY-NC-SA-4.0"' in DOCKERFILE


def test_apt_leaves_no_package_files_behind():
    for kind, rest in _instructions():
        if kind == "RUN" and "apt-get install" in rest:
            assert "apt-get clean" in rest and "rm -rf /var/lib/apt/lists/*" in rest, rest[:120]


def test_token_is_a_secret_never_an_arg_or_env():
    for kind, rest in _instructions():
        if kind in ("ARG", "ENV", "LABEL"):
            assert not re.search(r"HF_TOKEN|HUGGING_FACE_HUB_TOKEN|hf_token", rest, re.I), (kind, rest)
    bake = [rest for kind, rest in _instructions() if kind == "RUN" and "fishtune.weights" in rest]
    assert len(bake) == 1 and "--mount=type=secret,id=hf_token" in bake[0]


def test_layer_order_keeps_torch_out_of_code_changes():
    """The heavy `uv sync --no-install-project` sees only pyproject.toml and uv.lock; the code comes after."""
    ins = _instructions()
    heavy = next(i for i, (k, r) in enumerate(ins) if k == "RUN" and "--no-install-project" in r)
    copies_before = [r for k, r in ins[:heavy] if k == "COPY" and not r.startswith(("--from=", "--link --from="))]
    installer = {"src/fishtune/weights.py", "src/fishtune/errors.py", "${WEIGHTS_PINS}"}  # the weights stage's
    allowed = {"pyproject.toml", "uv.lock", "docker/uv-requirements.txt", "/tmp/uv-requirements.txt"} | installer
    assert copies_before and all(set(r.split()[:-1]) <= allowed for r in copies_before), copies_before
    src_copy = next(i for i, (k, r) in enumerate(ins) if k == "COPY" and r.startswith("src "))
    assert src_copy > heavy
    assert "--mount=type=cache,target=/root/.cache/uv" in ins[heavy][1]
    assert "--frozen" in ins[heavy][1] and "--no-dev" in ins[heavy][1]


def test_dockerignore_keeps_the_venv_and_runs_out():
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()[:1] not in ("", "#")]
    assert ignore[0] == "*"  # allow-list: only named paths reach the builder
    assert "!.venv" not in ignore and "!runs/" not in ignore


@pytest.mark.skipif(not WORKFLOWS, reason="no workflows")
def test_actions_are_pinned_by_sha_with_version_comment():
    uses = [
        (wf.name, line.strip())
        for wf in WORKFLOWS
        for line in wf.read_text().splitlines()
        if re.match(r"\s*-?\s*uses:", line)
    ]
    assert uses
    for name, line in uses:
        assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d", line), f"{name}: {line}"


def test_driver_requirement_is_computed_from_the_torch_build():
    """docker/driver_requirement.py: CUDA from the lock's runtime wheel, machine code from the installed torch."""
    import json
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    p = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "driver_requirement.py"), "--json"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert (
        r["cuda"]
        == ".".join(torch.version.cuda.split(".")[:2])
        == ".".join(_lock()["nvidia-cuda-runtime-cu12"].split(".")[:2])
    )
    assert r["sass_for"] == {"A100": True, "H100": True, "H200": True}  # sm_80 and sm_90 machine code in the wheel
    assert r["minimum_driver"] == "525.60.13"
