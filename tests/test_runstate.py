"""Atomic writes and the resume journal."""

from __future__ import annotations

import json

import pytest

from fishtune.runstate import Journal, RunState, atomic_path, write_json_atomic, write_text_atomic


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_journal_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.add("a", value=1)
        j.add("b", value=2)
    with open(path, "a") as fh:
        fh.write('{"key": "c", "val')  # the process died mid-write
    j = Journal(path)
    assert sorted(j.entries) == ["a", "b"]
    j.add("c", value=3)
    j.compact({"a", "c"})
    j.close()
    assert sorted(Journal(path).entries) == ["a", "c"]


def test_runstate_records_fingerprints(tmp_path):
    state = RunState(tmp_path)
    assert not state.is_current("prepare", "abc")
    state.record("prepare", fingerprint="abc", started=0.0, accepted=3)
    assert state.is_current("prepare", "abc")
    assert not state.is_current("prepare", "abd")
    rec = json.loads((tmp_path / "state.json").read_text())["stages"]["prepare"]
    assert rec["accepted"] == 3 and rec["versions"]["protobuf"] == "3.20.3"


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    from fishtune.errors import InputError

    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(InputError, match="state.json is not valid JSON"):
        RunState(tmp_path).load()
    write_json_atomic(tmp_path / "state.json", {"stages": {}})
    assert RunState(tmp_path).load() == {"stages": {}}


def test_clean_leftovers_removes_every_temp_folder_of_a_killed_atomic_dir(tmp_path):
    from fishtune.runstate import clean_leftovers

    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "keep.txt").write_text("x")
    stale = [tmp_path / ".model.abc", tmp_path / ".model.fetch.def", tmp_path / ".model.old"]
    for p in stale:
        p.mkdir()
        (p / "half").write_text("y")
    (tmp_path / ".model.x.tmp").write_text("a file, not atomic_dir's")
    (tmp_path / ".other.abc").mkdir()
    clean_leftovers(dest)
    assert not any(p.exists() for p in stale)
    assert (
        (dest / "keep.txt").is_file() and (tmp_path / ".model.x.tmp").is_file() and (tmp_path / ".other.abc").is_dir()
    )
    clean_leftovers(tmp_path / "missing" / "dest")  # no parent folder: nothing to do


def test_link_or_copy_links_the_real_file_and_remove_temp_files(tmp_path):
    from fishtune.runstate import link_or_copy, remove_temp_files

    src = tmp_path / "a.bin"
    src.write_bytes(b"data")
    (tmp_path / "alias").symlink_to(src)
    link_or_copy(tmp_path / "alias", tmp_path / "out" / "b.bin")
    out = tmp_path / "out" / "b.bin"
    assert not out.is_symlink() and out.stat().st_ino == src.stat().st_ino  # a hard link to the target
    (tmp_path / "out" / ".b.bin.123.tmp").write_bytes(b"half")
    (tmp_path / "out" / "sub").mkdir()
    (tmp_path / "out" / "sub" / ".c.456.tmp").write_bytes(b"half")
    remove_temp_files(tmp_path / "out")
    assert not (tmp_path / "out" / ".b.bin.123.tmp").exists() and (tmp_path / "out" / "sub" / ".c.456.tmp").exists()
    remove_temp_files(tmp_path / "out", subfolders=True)
    assert not (tmp_path / "out" / "sub" / ".c.456.tmp").exists() and out.read_bytes() == b"data"
