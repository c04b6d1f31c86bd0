"""One writer per run directory: an OS-level lock (``fcntl.flock``) on ``<run_dir>/.fishtune.lock``.

Every command that runs a writing stage holds the lock for as long as its stages run; a second writer fails at
once with a line naming the stage that runs and its pid. The kernel drops the lock when the holder's process
ends, however it ends, so ``kill -9`` never leaves a stale lock (the file stays, with the last holder's details,
but nobody holds it). Read-only stages (``doctor``, ``serve``) take no lock and run alongside a writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from fishtune.errors import FishtuneError
from fishtune.layout import RunLayout

READ_ONLY = frozenset({"doctor", "serve"})


class RunBusy(FishtuneError):
    """Another process writes to the same run directory."""


class _Held:
    fh = None
    command: list[str] = []


_HELD = _Held()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another fishtune process"
    return f"stage {info.get('stage', '?')} (pid {info['pid']} on {info.get('host', '?')}, since {info.get('since')})"


def _write(stage: str) -> None:
    fh = _HELD.fh
    info = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage, "command": _HELD.command}
    info["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(info) + "\n")
    fh.flush()


@contextlib.contextmanager
def hold(run: RunLayout | str | os.PathLike, stages: list[str]) -> Iterator[None]:
    """Hold the run directory's lock while ``stages`` run (no lock when all of them only read)."""
    if all(s in READ_ONLY for s in stages):
        yield
        return
    run = RunLayout.coerce(run)
    run_dir, path = run.root, run.lock
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below; the lock lives as long as the fd
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise RunBusy(
            f"run directory {run_dir} is in use by {_holder(path)}",
            hint="wait for it to finish (or stop it), or use another RUN_NAME; read-only stages (doctor, serve) "
            "may run alongside",
        ) from None
    _HELD.fh, _HELD.command = fh, list(stages)
    try:
        _write(stages[0])
        yield
    finally:
        _HELD.fh = None
        fh.close()  # releases the lock


def stage_started(name: str) -> None:
    """Record the running stage in the lock file (what a second writer is told)."""
    if _HELD.fh is not None:
        with contextlib.suppress(OSError):
            _write(name)
