"""``clips/manifest.jsonl``: the accepted clips prepare wrote, read by extract, pack and evaluate."""

from __future__ import annotations

from pathlib import Path

from fishtune.errors import InputError
from fishtune.runstate import read_jsonl


def read_manifest(path: Path) -> list[dict]:
    """The manifest's rows; a clear error when prepare has not run or accepted nothing."""
    if not path.is_file():
        raise InputError(f"{path} not found", hint="run the prepare stage first (STAGE=prepare)")
    rows = read_jsonl(path)
    if not rows:
        raise InputError(f"{path} lists no clips", hint=f"rerun prepare; see {path.parent / 'rejected.jsonl'}")
    return rows
