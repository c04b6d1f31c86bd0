"""Dataset readers: fish folders, LJSpeech and CSS10, and every way an input can be unusable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fishtune import formats
from fishtune.errors import InputError


def _wav(src_data: Path) -> Path:
    return next(src_data.glob("*/lause_000.wav"))


def test_fish_folder_reports_every_problem(finnish_data):
    fmt, items = formats.read(finnish_data)
    assert fmt == "fish"
    by_id = {i.id: i for i in items}
    assert len(items) == 15
    assert by_id["puhuja/lause_004"].audio.suffix == ".mp3"
    assert "missing transcript" in by_id["puhuja/ilman_tekstia"].problem
    assert "transcript is empty" in by_id["puhuja/tyhja_teksti"].problem
    assert by_id["puhuja/rikki"].problem is None  # undecodable audio is found by prepare, not the reader
    assert by_id["puhuja/lause_000"].text == "Hyvää huomenta, tänään on kaunis päivä."


def test_fish_folder_non_utf8_and_orphan_lab(tmp_path, finnish_data):
    spk = tmp_path / "data" / "anna"
    spk.mkdir(parents=True)
    shutil.copy(_wav(finnish_data), spk / "a.wav")
    (spk / "a.lab").write_bytes("Hyvää päivää".encode("latin-1"))
    (spk / "b.lab").write_text("Ääni puuttuu", encoding="utf-8")
    _, items = formats.read(tmp_path / "data")
    by_id = {i.id: i for i in items}
    assert "not UTF-8" in by_id["anna/a"].problem
    assert "has no audio file" in by_id["anna/b"].problem


def test_ljspeech(tmp_path, finnish_data):
    root = tmp_path / "lj"
    (root / "wavs").mkdir(parents=True)
    shutil.copy(_wav(finnish_data), root / "wavs" / "LJ001-0001.wav")
    shutil.copy(_wav(finnish_data), root / "wavs" / "LJ001-0002.wav")
    (root / "metadata.csv").write_text(
        "LJ001-0001|Raaka teksti 5|Normalisoitu teksti viisi\n"
        "LJ001-0002|Vain yksi sarake\n"
        "LJ001-0003|Ei ääntä|Ei ääntä\n"
        "\n",
        encoding="utf-8",
    )
    fmt, items = formats.read(root)
    assert fmt == "ljspeech"
    by_id = {i.id: i for i in items}
    assert by_id["lj/LJ001-0001"].text == "Normalisoitu teksti viisi"
    assert by_id["lj/LJ001-0002"].text == "Vain yksi sarake"
    assert "not found" in by_id["lj/LJ001-0003"].problem and "metadata.csv:3" in by_id["lj/LJ001-0003"].problem


def test_css10_with_path_traversal(tmp_path, finnish_data):
    root = tmp_path / "css10"
    (root / "kirja").mkdir(parents=True)
    shutil.copy(_wav(finnish_data), root / "kirja" / "kirja_0000.wav")
    shutil.copy(_wav(finnish_data), tmp_path / "outside.wav")
    (root / "transcript.txt").write_bytes(
        b"kirja/kirja_0000.wav|Teksti yksi|Teksti yksi|3.2\n"
        + b"../outside.wav|Karkaa|Karkaa|1.0\n"
        + "kirja/x.wav|Latin \xe4".encode("latin-1")
        + b"\n"
    )
    fmt, items = formats.read(root)
    assert fmt == "css10"
    assert [i.problem for i in items][0] is None
    assert "outside the dataset" in items[1].problem
    assert "not UTF-8" in items[2].problem and "transcript.txt:3" in items[2].problem


def test_duplicate_ids_are_rejected(tmp_path, finnish_data):
    spk = tmp_path / "d" / "s"
    spk.mkdir(parents=True)
    for ext in (".wav", ".flac"):
        shutil.copy(_wav(finnish_data), spk / f"x{ext}")
    (spk / "x.lab").write_text("teksti")
    _, items = formats.read(tmp_path / "d")
    # x.flac and x.wav share a stem: one is used, the other is reported, nothing disappears.
    assert len(items) == 2
    assert [i.problem is None for i in items].count(True) == 1
    assert any(i.problem and "share one name" in i.problem for i in items)


def test_missing_and_empty_dataset_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        formats.read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no dataset found"):
        formats.read(tmp_path / "empty")
    with pytest.raises(InputError, match="unknown dataset format"):
        formats.read(tmp_path / "empty", "kaldi")
