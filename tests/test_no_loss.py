"""Data loss (issue 14): fishtune replaces an output folder only if it made it (or it is empty), never the base
weights, and a stage that fails or is killed leaves the earlier outputs as they were."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import TINY, copy_run, stage_cmd

pytestmark = pytest.mark.slow  # every test runs stages in subprocesses


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.txt").write_text("years of work")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(os.urandom(64))
    return path


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def test_fetch_never_replaces_a_folder_it_did_not_make(tmp_path, tiny_model, finnish_data):
    arc = tmp_path / "fi.tar"
    with tarfile.open(arc, "w") as tf:
        info = tarfile.TarInfo("ds/spk/a.lab")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"hei"))
    dest = _user_folder(tmp_path / "mine")
    before = _tree(dest)
    run = tmp_path / "runs" / "r"
    p = _run(
        stage_cmd(run, finnish_data, tiny_model, "fetch", f"fetch.dataset.path={arc}", f"fetch.dataset.dest={dest}")
    )
    assert (
        p.returncode == 1 and f"fetch.dataset.dest folder {dest} is not empty and was not made by fishtune" in p.stderr
    )
    assert len(p.stderr.strip().splitlines()) == 1 and _tree(dest) == before
    # an empty folder is fine, and once fishtune made it, fetching again may replace it
    empty = tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):
        p = _run(
            stage_cmd(
                run, finnish_data, tiny_model, "fetch", f"fetch.dataset.path={arc}", f"fetch.dataset.dest={empty}"
            )
        )
        assert p.returncode == 0, p.stderr
    assert (empty / "ds" / "spk" / "a.lab").read_text() == "hei" and (empty / ".fishtune-output").is_file()


def test_evaluate_never_replaces_a_folder_it_did_not_make(tmp_path, packed_run, finnish_data, tiny_model):
    run = copy_run(packed_run, tmp_path / "runs" / "ev")
    mine = _user_folder(tmp_path / "report-mine")
    before = _tree(mine)
    p = _run(stage_cmd(run, finnish_data, tiny_model, "evaluate", f"evaluate.output={mine}"))
    assert p.returncode == 1 and "evaluate.output folder" in p.stderr and "not made by fishtune" in p.stderr
    assert _tree(mine) == before


@pytest.mark.parametrize("where", ["same", "inside"])
def test_merge_never_writes_over_the_base_model(tmp_path, packed_run, finnish_data, tiny_model, where):
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    (base / "WEIGHTS_SOURCE").write_text("downloaded by fishtune fetch: x@y\n")  # a folder fetch made
    before = _tree(base)
    run = copy_run(packed_run, tmp_path / "runs" / "m")
    out = base if where == "same" else base / "merged"
    p = _run(stage_cmd(run, finnish_data, base, "merge", f"merge.output={out}"))
    assert p.returncode == 2 and f"would replace the base model folder model.path={base}" in p.stderr
    assert _tree(base) == before


def test_failing_prepare_keeps_the_last_good_clips(runner, tmp_path, finnish_data):
    runner("prepare", *TINY, timeout=300)
    clips = runner.run_dir / "clips"
    before = _tree(clips)
    broken = tmp_path / "broken"
    (broken / "anna").mkdir(parents=True)
    for n in range(3):
        (broken / "anna" / f"x{n}.wav").write_bytes(b"not audio")
        (broken / "anna" / f"x{n}.lab").write_text("Hei.", encoding="utf-8")
    p = runner("prepare", *TINY, env={"FISHTUNE_DATA": str(broken)}, check=False, timeout=300)
    assert p.returncode == 1 and "no usable clips" in p.stderr and "clips/ was left as it was" in p.stderr
    after = _tree(clips)
    after.pop(".journal.jsonl", None), before.pop(".journal.jsonl", None)
    assert after == before
    assert len((runner.run_dir / "logs" / "prepare.rejected.jsonl").read_text().splitlines()) == 3


def test_synthesize_replaces_its_samples_as_a_whole(runner):
    three = runner.tmp / "three.txt"
    three.write_text("Yksi.\nKaksi.\nKolme.\n", encoding="utf-8")
    args = ["synthesize", *TINY, "synthesize.model=base", "synthesize.max_new_tokens=8"]
    runner(*args, f"synthesize.text_file={three}", timeout=300)
    samples = runner.run_dir / "samples"
    assert sorted(p.name for p in samples.glob("*.wav")) == ["000.wav", "001.wav", "002.wav"]
    before = _tree(samples)
    # killed while writing the second wav: the earlier samples stay exactly as they were
    two = runner.tmp / "two.txt"
    two.write_text("Neljä.\nViisi.\n", encoding="utf-8")
    p = runner(*args, f"synthesize.text_file={two}", env={"FISHTUNE_KILL_AT": "write:001.wav"}, check=False)
    assert p.returncode == -9 and _tree(samples) == before
    # a shorter run leaves no stale wavs from the longer one (publish would upload them)
    runner(*args, "synthesize.text=Hei.", timeout=300)
    assert sorted(p.name for p in samples.glob("*.wav")) == ["000.wav"] and _tree(samples) != before
    mine = _user_folder(runner.tmp / "mine")
    p = runner(*args, "synthesize.text=Hei.", f"synthesize.output={mine}", check=False)
    assert p.returncode == 1 and "synthesize.output folder" in p.stderr and not list(mine.glob("*.wav"))
