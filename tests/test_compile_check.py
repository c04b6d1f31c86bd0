"""train.compile where no compiler is installed (the image): refused with one line by doctor and by training
set-up, before any step; where one is installed, nothing is refused. No compiler is faked: PATH is narrowed to a
folder without one, as in the image."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import copy_run, stage_cmd
from fishtune.training import compiler


@pytest.fixture
def no_compiler(tmp_path, monkeypatch) -> dict:
    """An environment whose PATH holds no compiler (only what the stages call: ffmpeg, espeak-ng)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ffmpeg", "ffprobe", "espeak-ng"):
        if path := subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip():
            (bin_dir / tool).symlink_to(path)
    for var in ("CC", "CXX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    return {k: v for k, v in os.environ.items() if k not in ("CC", "CXX")} | {"PATH": str(bin_dir)}


def test_the_check_finds_what_is_there_and_names_what_is_not(no_compiler, monkeypatch):
    assert compiler.backend_of(True) == compiler.backend_of("true") == "inductor"
    assert compiler.backend_of(False) is None and compiler.backend_of("aot_eager") == "aot_eager"
    for device in ("cuda", "cpu"):
        problem = compiler.compile_problem(True, device)
        assert problem and "needs a C" in problem and "\n" not in problem
        assert compiler.compile_problem("aot_eager", device) is None  # generates no code
        assert compiler.compile_problem(False, device) is None
    with pytest.raises(
        Exception, match=r"train.compile \(torch.compile with inductor\) on cpu needs a C\+\+ compiler"
    ) as err:
        compiler.require("true", "cpu")
    assert "Fix: set train.compile=false" in str(err.value)
    # a compiler named by CC/CXX counts (as Triton and inductor read them)
    cc = subprocess.run(["which", "true"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout
    monkeypatch.setenv("CC", cc.strip())
    monkeypatch.setenv("CXX", cc.strip())
    assert compiler.compiler_for("cuda") == compiler.compiler_for("cpu") == cc.strip()


@pytest.mark.slow
def test_train_refuses_before_the_first_step(tmp_path, packed_run, finnish_data, tiny_model, no_compiler):
    run = copy_run(packed_run, tmp_path / "runs" / "cc")
    cmd = stage_cmd(run, finnish_data, tiny_model, "train", "train.compile=true", "train.max_steps=2")
    p = subprocess.run(cmd, env=no_compiler, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train.compile (torch.compile with inductor) on cpu needs a C++ compiler" in errors[0]
    assert not list(run.rglob("step_*.ckpt"))


@pytest.mark.slow
def test_doctor_fails_the_compile_check_with_one_line(tmp_path, finnish_data, tiny_model, no_compiler):
    run = tmp_path / "runs" / "doc"
    p = subprocess.run(
        stage_cmd(run, finnish_data, tiny_model, "doctor", "train.compile=true"),
        env=no_compiler,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 1, p.stderr[-2000:]
    doc = json.loads((run / "doctor.json").read_text())
    row = next(r for r in doc["checks"] if r["check"] == "compile")
    assert (
        row["status"] == "FAIL" and "needs a C++ compiler" in row["detail"] and "train.compile=false" in row["detail"]
    )
    assert "compile: train.compile (torch.compile with inductor) on cpu" in p.stderr
    # with the compiler back (this machine has one), the same check passes
    if compiler.compiler_for("cpu") is None:
        return
    p = subprocess.run(
        stage_cmd(run, finnish_data, tiny_model, "doctor", "train.compile=true"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    doc = json.loads((run / "doctor.json").read_text())
    assert next(r for r in doc["checks"] if r["check"] == "compile")["status"] == "ok", p.stderr[-2000:]
