"""The run directory: atomic writes, per-stage state records and resumable journals.

Every file a stage produces is written to a temporary name in the same folder and renamed into place,
so a killed process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fishtune import faults
from fishtune.errors import InputError
from fishtune.layout import RunLayout
from fishtune.weights import sha256_file  # noqa: F401 (one hash reader, re-exported for the stages)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def make_public(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by mkstemp/mkdtemp (0600/0700) the usual permissions under the process umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        faults.point(f"write:{path.name}")  # tests: a kill -9 with the file written but not yet in place
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        make_public(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def remove_temp_files(folder: str | os.PathLike, subfolders: bool = False) -> None:
    """Delete the half-written ``.name.*.tmp`` files a killed :func:`atomic_path` left in ``folder`` (and, with
    ``subfolders``, one level down)."""
    folder = Path(folder)
    for pattern in [".*.tmp", "*/.*.tmp"] if subfolders else [".*.tmp"]:
        for p in folder.glob(pattern):
            p.unlink(missing_ok=True)


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike, copy=shutil.copyfile) -> None:
    """``dst`` as a hard link to the file behind ``src`` (symlinks resolved), or a copy across filesystems."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(src)
    try:
        os.link(real, dst)
    except OSError:
        copy(real, dst)


def clean_leftovers(path: str | os.PathLike) -> None:
    """Remove the temporary folders a killed :func:`atomic_dir` left next to ``path`` (``.name.[tag.]*``, any tag,
    and ``.name.old``)."""
    path = Path(path)
    if path.parent.is_dir():
        for p in path.parent.glob(f".{path.name}.*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


OWNED = ".fishtune-output"  # written into every folder atomic_dir makes: "fishtune made this, it may replace it"
# Folders earlier fishtune versions made, before OWNED existed: their own marker files.
LEGACY_OWNED = (".fishtune-source.json", "WEIGHTS_SOURCE", "state.json", "report.json", "index.jsonl")


def check_replaceable(path: str | os.PathLike, what: str = "output folder") -> None:
    """The one rule for output folders: fishtune replaces a folder only if it is empty or fishtune made it
    (:data:`OWNED`); anything else is refused with one line naming it, before any work."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        raise InputError(f"the {what} {path} is a file or link, not a folder fishtune made", hint=_OWN_HINT)
    if any((path / m).is_file() for m in (OWNED, *LEGACY_OWNED)):
        return
    try:
        empty = not any(path.iterdir())
    except OSError as err:
        raise InputError(f"cannot read the {what} {path} ({err.strerror or err})", hint=_OWN_HINT) from err
    if not empty:
        raise InputError(
            f"the {what} {path} is not empty and was not made by fishtune: refusing to replace it", hint=_OWN_HINT
        )


_OWN_HINT = "point the setting at a new or empty folder (fishtune replaces only folders it made)"


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, tag: str = "", what: str = "output folder") -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path`` as a whole.

    ``path`` must be absent, empty or made by fishtune (:func:`check_replaceable`); the new folder is marked with
    :data:`OWNED`. A crash leaves the old folder (or none) and a hidden ``.name.[tag.]*`` temp folder, never a mix
    of old and new; :func:`clean_leftovers` removes such folders.
    """
    path = Path(path)
    check_replaceable(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{tag + '.' if tag else ''}", dir=path.parent))
    make_public(tmp, directory=True)
    try:
        yield tmp
        (tmp / OWNED).write_text("made by fishtune; it may replace this folder as a whole\n", encoding="utf-8")
        check_replaceable(path, what)  # still true after the work (another process may have filled it)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file written by this package; a bad line is an error naming the file and line."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(
                    f"{path}:{lineno} is not valid JSON ({err.msg})",
                    hint="delete the file and rerun the stage that writes it",
                ) from err
    return rows


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class Journal:
    """An append-only JSON-lines record of finished work items, for resuming after a kill.

    Each line is flushed and fsynced on write. A torn last line (the process died mid-write) is ignored
    on load, so the item it described is simply redone.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and "key" in row:
                        self.entries[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def add(self, key: str, **fields: Any) -> None:
        row = {"key": key, **fields}
        self.entries[key] = row
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def compact(self, keep: set[str]) -> None:
        """Rewrite the journal with only ``keep`` keys (drops entries for inputs that no longer exist)."""
        self._fh.close()
        self.entries = {k: v for k, v in self.entries.items() if k in keep}
        write_jsonl_atomic(self.path, list(self.entries.values()))
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunState:
    """``<run_dir>/state.json``: what each stage did, with the fingerprint of its inputs and config."""

    def __init__(self, run: RunLayout | str | os.PathLike):
        run = RunLayout.coerce(run)
        self.run_dir = run.root
        self.path = run.state

    def load(self) -> dict:
        if not self.path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(
                f"{self.path} is not valid JSON ({err.msg})",
                hint="delete it; every stage will then check its outputs again",
            ) from err

    def stage(self, name: str) -> dict | None:
        return self.load()["stages"].get(name)

    def is_current(self, name: str, fingerprint: str) -> bool:
        rec = self.stage(name)
        return bool(rec and rec.get("status") == "done" and rec.get("fingerprint") == fingerprint)

    def record(self, name: str, *, fingerprint: str, started: float, **summary: Any) -> None:
        from fishtune import versions

        state = self.load()
        state["stages"][name] = {
            "status": "done",
            "fingerprint": fingerprint,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - started, 3),
            "versions": versions.package_versions(),
            **summary,
        }
        write_json_atomic(self.path, state)
