"""Safe extraction of dataset archives (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz, .zip).

Every member is checked before anything is written; the archive is refused (one line naming the archive and
the member) when a member
- has an absolute path or a ``..`` component (path traversal),
- is a symbolic link or hard link whose target is absolute or resolves outside the target folder: checked by
  the text of the target first, then, after extraction and before the rename, by resolving every link for real
  (:func:`fishtune.paths.inside`), so a chain of relative links cannot climb out either,
- is a device, FIFO or other special file,
- is a file and a folder of the same name.
Extraction goes to a temporary folder next to the target and is renamed into place at the end, so a killed
or refused extraction leaves no partial dataset behind.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from fishtune import paths
from fishtune.errors import InputError
from fishtune.runstate import atomic_dir

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


class UnsafeArchive(InputError):
    """An archive member would land outside the target folder (or is a special file)."""


def _refuse(archive: Path, member: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(
        f"refusing to extract {archive}: member {member!r} {why}",
        hint="this archive could write outside the dataset folder; repack it with relative paths and no links "
        "that leave it",
    )


def _check_name(archive: Path, name: str) -> str:
    """The member's normalised relative path; refuses absolute paths and ``..``."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise _refuse(archive, name, "has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, name, "has a '..' path component (path traversal)")
    return "/".join(parts)


def _check_link(archive: Path, name: str, rel: str, target: str, hard: bool) -> None:
    kind = "hard link" if hard else "symbolic link"
    t = target.replace("\\", "/")
    if not t or t.startswith("/"):
        raise _refuse(archive, name, f"is a {kind} to an absolute path {target!r}")
    # A hard link's target is relative to the archive root, a symlink's to the link's own folder.
    joined = posixpath.normpath(t if hard else posixpath.join(posixpath.dirname(rel), t))
    if joined == ".." or joined.startswith("../"):
        raise _refuse(archive, name, f"is a {kind} pointing outside the target folder ({target!r})")


def _check_tar(archive: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tf.getmembers()
    for m in members:
        rel = _check_name(archive, m.name)
        if m.issym() or m.islnk():
            _check_link(archive, m.name, rel, m.linkname, hard=m.islnk())
        elif not (m.isfile() or m.isdir()):
            raise _refuse(archive, m.name, "is a device, FIFO or other special file")
    return members


def _zip_mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    for info in infos:
        rel = _check_name(archive, info.filename)
        mode = _zip_mode(info)
        if stat.S_ISLNK(mode):
            _check_link(archive, info.filename, rel, zf.read(info).decode("utf-8", "replace"), hard=False)
        elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise _refuse(archive, info.filename, "is a device, FIFO or other special file")
    return infos


def _target(archive: Path, dest: Path, name: str, rel: str, is_dir: bool) -> Path:
    """Where member ``name`` goes; refuses a path through a link that leaves ``dest`` (links resolved for real)
    and a file and a folder of the same name. A file member replaces an earlier file or link of its name
    (tar's rule), never writing through that link."""
    out = dest / rel
    if not paths.inside(dest, out.parent):  # a symlinked folder inside the archive pointing elsewhere
        raise _refuse(archive, name, "goes through a link that leaves the target folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise _clash(archive, name, "is inside a folder that is also a file in the archive (same name)") from err
    if is_dir:
        if os.path.lexists(out) and (out.is_symlink() or not out.is_dir()):
            raise _clash(archive, name, "is a folder, and a file or link of the same name is in the archive too")
        return out
    if out.is_dir() and not out.is_symlink():
        raise _clash(archive, name, "is a file, and a folder of the same name is in the archive too")
    if os.path.lexists(out):
        out.unlink()
    return out


def _clash(archive: Path, member: str, why: str) -> InputError:
    return InputError(
        f"cannot extract {archive}: member {member!r} {why}",
        hint="repack the archive so that each path is either a file or a folder",
    )


def _write(src, out: Path) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with src, open(fd, "wb") as w:
        shutil.copyfileobj(src, w, 1 << 20)


def _check_links(archive: Path, dest: Path, names: dict[str, str]) -> None:
    """After extraction, before the rename: every link, resolved for real (chains too), stays inside."""
    for link in paths.links_leaving(dest):
        rel = link.relative_to(dest).as_posix()
        raise _refuse(archive, names.get(rel, rel), "is a link that resolves outside the target folder")


def _extract_tar(archive: Path, dest: Path) -> int:
    try:
        with tarfile.open(archive) as tf:
            members = _check_tar(archive, tf)
            count, names = 0, {}
            for m in members:
                rel = _check_name(archive, m.name)
                if not rel:
                    continue
                names[rel] = m.name
                out = _target(archive, dest, m.name, rel, m.isdir())
                if m.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                elif m.issym():
                    os.symlink(m.linkname, out)
                elif m.islnk():
                    src = dest / _check_name(archive, m.linkname)
                    if not paths.inside(dest, src) or not src.is_file():
                        raise _refuse(archive, m.name, "is a hard link through a link that leaves the target folder")
                    _write(open(src, "rb"), out)  # noqa: SIM115 - closed by _write
                else:
                    fh = tf.extractfile(m)
                    if fh is None:  # pragma: no cover - isfile() members always have data
                        continue
                    _write(fh, out)
                    count += 1
            _check_links(archive, dest, names)
            return count
    except (tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise InputError(
            f"{archive} is not a readable tar or zip archive ({err})",
            hint="download it again (it may be truncated); use .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz or .zip",
        ) from err


def _extract_zip(archive: Path, dest: Path) -> int:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = _check_zip(archive, zf)
            count, names = 0, {}
            for info in infos:
                rel = _check_name(archive, info.filename)
                if not rel:
                    continue
                names[rel] = info.filename
                out = _target(archive, dest, info.filename, rel, info.is_dir())
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                elif stat.S_ISLNK(_zip_mode(info)):
                    os.symlink(zf.read(info).decode("utf-8"), out)
                else:
                    _write(zf.open(info), out)
                    count += 1
            _check_links(archive, dest, names)
            return count
    except (zipfile.BadZipFile, EOFError) as err:
        raise InputError(
            f"{archive} is not a readable zip archive ({err})", hint="download it again; it may be truncated"
        ) from err


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> int:
    """Check, then extract ``archive`` into ``dest`` (replacing it atomically); returns the number of files."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise InputError(f"archive {archive} not found", hint="check fetch.dataset.path / fetch.dataset.archive")
    with atomic_dir(dest, tag="extract", what="fetch.dataset.dest folder") as tmp:
        return _extract_zip(archive, tmp) if zipfile.is_zipfile(archive) else _extract_tar(archive, tmp)
