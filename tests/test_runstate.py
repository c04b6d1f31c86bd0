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
