"""Data exposure (issue 14): links are resolved for real, by archive extraction and by every dataset reader, so
nothing outside the dataset folder is read as a transcript or audio; odd entries are listed, never dropped."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ENTRYPOINT, TINY
from fishtune import archives, formats

SECRET = "root:x:0:0:SECRET-LINE-OUTSIDE-THE-DATASET"


def _chain() -> list[tuple[str, str]]:
    """a/up0 -> .., a/upN -> up{N-1}/..: every target looks inside by its text, up11 really is the file system root."""
    links = [("a/up0", "..")] + [(f"a/up{n}", f"up{n - 1}/..") for n in range(1, 12)]
    return links


def _chain_tar(path: Path, target: str) -> Path:
    wav = b"RIFF"
    with tarfile.open(path, "w") as tf:
        for name, data in [("spk/x.wav", wav)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, link in [*_chain(), ("spk/x.lab", f"../a/up11{target}")]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, link
            tf.addfile(info)
    return path


def _chain_zip(path: Path, target: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("spk/x.wav", b"RIFF")
        for name, link in [*_chain(), ("spk/x.lab", f"../a/up11{target}")]:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, link)
    return path


@pytest.mark.parametrize("make", [_chain_tar, _chain_zip], ids=["tar", "zip"])
def test_relative_symlink_chain_in_an_archive_is_refused(tmp_path, make):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    arc = make(tmp_path / ("chain.tar" if make is _chain_tar else "chain.zip"), str(secret))
    dest = tmp_path / "sub" / "raw"
    with pytest.raises(archives.UnsafeArchive, match="resolves outside the target folder") as info:
        archives.extract(arc, dest)
    assert str(arc) in info.value.one_line()
    assert not dest.exists() and list((tmp_path / "sub").iterdir()) == []


def test_fetch_then_prepare_never_reads_a_chained_link(tmp_path, tiny_model):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    arc = _chain_tar(tmp_path / "chain.tar", str(secret))
    runs = tmp_path / "runs"
    cmd = [sys.executable, str(ENTRYPOINT), "fetch,prepare", *TINY, f"paths.runs={runs}", "run_name=r"]
    cmd += [f"paths.cache={tmp_path / 'cache'}", f"model.path={tiny_model}", f"fetch.dataset.path={arc}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "resolves outside the target folder" in p.stderr
    assert not any(SECRET in f.read_text(errors="replace") for f in runs.rglob("*") if f.is_file())


def _fish(tmp_path: Path, finnish_data: Path) -> Path:
    root = tmp_path / "data"
    (root / "anna").mkdir(parents=True)
    for name in ("lause_000", "lause_001"):
        shutil.copy(next(finnish_data.glob(f"*/{name}.wav")), root / "anna" / f"{name}.wav")
        (root / "anna" / f"{name}.lab").write_text("Hyvää päivää.", encoding="utf-8")
    return root


def test_fish_layout_links_to_outside_files_are_rejected(tmp_path, finnish_data):
    root = _fish(tmp_path, finnish_data)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    shutil.copy(root / "anna" / "lause_000.wav", outside / "private.wav")
    (root / "anna" / "x.wav").symlink_to(outside / "private.wav")
    (root / "anna" / "x.lab").write_text("Hei.", encoding="utf-8")
    (root / "anna" / "y.wav").symlink_to("lause_000.wav")  # a link that stays inside is fine
    (root / "anna" / "y.lab").symlink_to(outside / "secret.txt")
    (root / "other").symlink_to(outside)  # a whole speaker folder elsewhere
    _, items = formats.read(root)
    problems: dict[str, str] = {}
    for i in items:
        problems[i.id] = problems.get(i.id, "") + str(i.problem)
    assert "x.wav is a link to" in problems["anna/x"] and "outside the dataset folder" in problems["anna/x"]
    assert "y.lab is a link to" in problems["anna/y"] and "outside the dataset folder" in problems["anna/y"]
    assert "outside the dataset folder" in problems["data/other"]
    assert all(SECRET not in (i.text or "") for i in items)
    assert problems["anna/lause_000"] == "None" and len([i for i in items if not i.problem]) == 2


def test_odd_entries_are_listed_not_dropped(tmp_path, finnish_data):
    root = _fish(tmp_path, finnish_data)
    deep = root / "anna" / "extra" / "more"
    deep.mkdir(parents=True)
    shutil.copy(root / "anna" / "lause_000.wav", deep / "deep.wav")
    (deep / "deep.lab").write_text("Syvällä.", encoding="utf-8")
    os.mkfifo(root / "anna" / "pipe.wav")
    (root / "anna" / "folder.wav").mkdir()
    (root / "anna" / "dev.wav").symlink_to("/dev/zero")
    (root / "anna" / "gone.lab").symlink_to("nothing-here.lab")
    _, items = formats.read(root)
    problems = {i.source: i.problem for i in items if i.problem}
    assert "3 folders deep" in problems[str(deep / "deep.wav")] and str(deep / "deep.lab") in problems
    assert "not a regular file" in problems[str(root / "anna" / "pipe.wav")]
    assert "is a folder" in problems[str(root / "anna" / "folder.wav")]
    assert "outside the dataset folder" in problems[str(root / "anna" / "dev.wav")]
    assert "broken link" in problems[str(root / "anna" / "gone.lab")]
    assert len(problems) == 6 and len([i for i in items if not i.problem]) == 2


@pytest.mark.slow
def test_prepare_lists_odd_entries_in_rejected_jsonl(runner, tmp_path, finnish_data):
    root = _fish(tmp_path, finnish_data)
    os.mkfifo(root / "anna" / "pipe.wav")  # prepare would hang reading a FIFO it did not list
    sub = root / "anna" / "extra" / "more"
    sub.mkdir(parents=True)
    (sub / "deep.lab").write_text("Syvällä.", encoding="utf-8")
    p = runner("prepare", *TINY, "prepare.max_reject_fraction=1", env={"FISHTUNE_DATA": str(root)}, timeout=300)
    rows = [json.loads(line) for line in (runner.run_dir / "clips" / "rejected.jsonl").read_text().splitlines()]
    reasons = " ".join(r["reason"] for r in rows)
    assert "not a regular file" in reasons and "folders deep" in reasons, p.stdout


def test_ljspeech_pipe_inside_the_text_is_rejected(tmp_path, finnish_data):
    root = tmp_path / "lj"
    (root / "wavs").mkdir(parents=True)
    for n in ("a", "b"):
        shutil.copy(next(finnish_data.glob("*/lause_000.wav")), root / "wavs" / f"{n}.wav")
    (root / "metadata.csv").write_text("a|Hyvää päivää.|Hyvää päivää.\nb|Kyllä | ei|Kyllä | ei\n", encoding="utf-8")
    _, items = formats.read(root)
    by_id = {i.id: i for i in items}
    assert by_id["lj/a"].problem is None
    assert "'|' inside the text" in by_id["lj/b"].problem and "metadata.csv:2" in by_id["lj/b"].problem


@pytest.mark.parametrize(
    "members",
    [
        [("file", "ds/a"), ("file", "ds/a/b.lab")],  # a file, then a folder of the same name
        [("file", "ds/a/b.lab"), ("file", "ds/a")],  # a folder, then a file of the same name
    ],
)
def test_file_and_folder_of_the_same_name_is_one_clear_line(tmp_path, members):
    arc = tmp_path / "clash.tar"
    with tarfile.open(arc, "w") as tf:
        for _, name in members:
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(archives.InputError, match="a file and a folder|same name") as info:
        archives.extract(arc, tmp_path / "raw")
    assert "'ds/a" in info.value.one_line() and not (tmp_path / "raw").exists()


def test_a_file_member_never_writes_through_an_earlier_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    arc = tmp_path / "over.tar"
    with tarfile.open(arc, "w") as tf:
        info = tarfile.TarInfo("ds/x.lab")
        info.type, info.linkname = tarfile.SYMTYPE, "../../victim.txt"
        tf.addfile(info)
    with pytest.raises(archives.UnsafeArchive):
        archives.extract(arc, tmp_path / "raw")
    with tarfile.open(arc, "w") as tf:  # an inside link, then a file of the same name: the file replaces the link
        (tmp_path / "ds").mkdir()
        info = tarfile.TarInfo("ds/x.lab")
        info.type, info.linkname = tarfile.SYMTYPE, "y.lab"
        tf.addfile(info)
        for name in ("ds/y.lab", "ds/x.lab"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(name[3:4].encode() * 3))
    archives.extract(arc, tmp_path / "raw")
    assert (tmp_path / "raw" / "ds" / "x.lab").read_text() == "xxx" and not (tmp_path / "raw/ds/x.lab").is_symlink()
    assert (tmp_path / "raw" / "ds" / "y.lab").read_text() == "yyy" and victim.read_text() == "keep me"
