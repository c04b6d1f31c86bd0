"""Dataset archives: path traversal, absolute paths and links leaving the folder are refused before anything is
written; good archives (tar.gz, zip, links that stay inside) extract atomically."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from fishtune import archives
from fishtune.errors import InputError


def _tar(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    """members: (kind, name, data-or-link-target); kind is file | dir | sym | hard | fifo."""
    with tarfile.open(path, "w:gz") as tf:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                info.linkname = data
            tf.addfile(info)
    return path


def _zip(path: Path, members: list[tuple[str, bytes]], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


GOOD = [("dir", "ds", b""), ("file", "ds/spk/a.lab", b"hei"), ("file", "ds/spk/a.wav", b"RIFF")]


def test_good_tar_extracts_with_inside_links(tmp_path):
    arc = _tar(
        tmp_path / "ok.tar.gz",
        [*GOOD, ("sym", "ds/spk/b.lab", "a.lab"), ("hard", "ds/spk/c.lab", "ds/spk/a.lab")],
    )
    dest = tmp_path / "raw"
    assert archives.extract(arc, dest) == 2
    assert (dest / "ds" / "spk" / "a.lab").read_text() == "hei"
    assert (dest / "ds" / "spk" / "b.lab").is_symlink() and (dest / "ds" / "spk" / "b.lab").read_text() == "hei"
    assert (dest / "ds" / "spk" / "c.lab").read_text() == "hei" and not (dest / "ds" / "spk" / "c.lab").is_symlink()
    # extracting again replaces the folder as a whole; no temp folders stay behind
    (dest / "stale.txt").write_text("old")
    archives.extract(arc, dest)
    assert not (dest / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tar.gz", "raw"]


def test_good_zip_extracts(tmp_path):
    arc = _zip(tmp_path / "ok.zip", [("ds/spk/a.lab", b"hei"), ("ds/spk/a.wav", b"RIFF")])
    assert archives.extract(arc, tmp_path / "raw") == 2
    assert (tmp_path / "raw" / "ds" / "spk" / "a.lab").read_text() == "hei"


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([*GOOD, ("file", "../evil.txt", b"x")], "'..' path component"),
        ([*GOOD, ("file", "ds/../../evil.txt", b"x")], "'..' path component"),
        ([*GOOD, ("file", "/tmp/evil.txt", b"x")], "absolute path"),
        ([*GOOD, ("sym", "ds/link", "/etc/passwd")], "symbolic link to an absolute path"),
        ([*GOOD, ("sym", "ds/link", "../../outside")], "symbolic link pointing outside"),
        ([*GOOD, ("hard", "ds/hl", "../outside")], "hard link pointing outside"),
        ([*GOOD, ("hard", "ds/hl", "/etc/passwd")], "hard link to an absolute path"),
        ([*GOOD, ("fifo", "ds/pipe", b"")], "special file"),
    ],
)
def test_unsafe_tar_is_refused_and_nothing_is_written(tmp_path, members, why):
    arc = _tar(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "sub" / "raw"
    with pytest.raises(archives.UnsafeArchive) as info:
        archives.extract(arc, dest)
    msg = info.value.one_line()
    assert why in msg and str(arc) in msg and "\n" not in msg
    assert not dest.exists() and not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside").exists()
    assert list((tmp_path / "sub").iterdir()) == []  # no partial extraction left behind


@pytest.mark.parametrize(
    ("members", "links", "why"),
    [
        ([("ds/a.lab", b"x"), ("../evil.txt", b"x")], None, "'..' path component"),
        ([("ds/a.lab", b"x"), ("/abs/evil.txt", b"x")], None, "absolute path"),
        ([("ds/a.lab", b"x")], {"ds/link": "../../etc"}, "pointing outside"),
    ],
)
def test_unsafe_zip_is_refused(tmp_path, members, links, why):
    arc = _zip(tmp_path / "bad.zip", members, links)
    with pytest.raises(archives.UnsafeArchive, match=why):
        archives.extract(arc, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "evil.txt").exists()


def test_truncated_or_foreign_archive_is_a_clear_error(tmp_path):
    arc = _tar(tmp_path / "ok.tar.gz", GOOD)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(arc.read_bytes()[: len(arc.read_bytes()) // 2])
    with pytest.raises(InputError, match="truncated|not a readable"):
        archives.extract(cut, tmp_path / "raw")
    other = tmp_path / "notes.tar.gz"
    other.write_text("not an archive")
    with pytest.raises(InputError, match="not a readable tar or zip archive"):
        archives.extract(other, tmp_path / "raw2")
    assert not (tmp_path / "raw").exists() and not list(tmp_path.glob(".raw*"))
