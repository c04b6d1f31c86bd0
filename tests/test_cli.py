"""Dispatch: argv and STAGE do the same, unknown stages and bad overrides give one line and exit 2."""

from __future__ import annotations

import pytest

from conftest import TINY
from fishtune import stages


def test_help_lists_every_stage(runner):
    proc = runner("--help")
    for name in [*stages.STAGES, "all"]:
        assert f"  {name} " in proc.stdout
    assert "FISHTUNE_DATA" in proc.stdout


def test_unknown_stage_is_a_usage_error(runner):
    proc = runner("trian", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown stage 'trian'")
    for name in [*stages.STAGES, "all"]:
        assert name in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unknown_stage_from_env_is_a_usage_error(runner):
    proc = runner(env={"STAGE": "nope"}, check=False)
    assert proc.returncode == 2
    assert "unknown stage 'nope'" in proc.stderr


def test_no_stage_is_a_usage_error(runner):
    proc = runner(check=False)
    assert proc.returncode == 2
    assert "no stage given" in proc.stderr


def test_bad_override_is_a_usage_error(runner):
    proc = runner("doctor", "model=nosuchmodel", check=False)
    assert proc.returncode == 2
    assert "bad configuration override" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_env_stage_and_argv_stage_do_the_same(runner):
    by_arg = runner("doctor", *TINY)
    by_env = runner(*TINY, env={"STAGE": "doctor"})
    for proc in (by_arg, by_env):
        assert "stage doctor: starting" in proc.stdout
        assert "doctor: all checks passed" in proc.stdout
    assert (runner.run_dir / "logs" / "doctor.log").read_text().count("stage doctor: starting") == 2


@pytest.mark.slow
def test_preflight_is_an_alias_of_doctor(runner):
    assert "stage doctor: starting" in runner("preflight", *TINY).stdout


@pytest.mark.slow
def test_doctor_fails_on_missing_weights(runner, tmp_path):
    proc = runner("doctor", *TINY, env={"FISHTUNE_MODEL": str(tmp_path / "nothing")}, check=False)
    assert proc.returncode == 1
    assert "base model" in proc.stderr and "not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_doctor_fails_on_missing_dataset(runner, tmp_path):
    proc = runner("doctor", *TINY, env={"FISHTUNE_DATA": str(tmp_path / "nodata")}, check=False)
    assert proc.returncode == 1
    assert "dataset folder" in proc.stderr and "does not exist" in proc.stderr


@pytest.mark.slow
def test_doctor_reports_hashes_and_counts(runner):
    import json

    runner("doctor", *TINY)
    report = json.loads((runner.run_dir / "doctor.json").read_text())
    assert len(report["model_sha256"]["model.pth"]) == 64
    assert report["dataset"] == {"format": "fish", "inputs": 15, "usable": 13, "speakers": 1}
    assert report["gpu"]["cuda"] is False
    voikko = [c for c in report["checks"] if c["check"] == "voikko"]  # the default recipe is Finnish
    assert [c["status"] for c in voikko] == ["ok"], voikko
