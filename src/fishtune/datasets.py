"""Where the dataset is: ``paths.data``, or the folder the ``fetch`` stage put a downloaded or extracted one in.

Read by ``fetch`` (what to download, and where), ``prepare`` and ``doctor`` (what to read). A fetched dataset's
folder holds :data:`MARKER`, a record of its source; until it does, reading it is an error that says to fetch.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fishtune.errors import InputError
from fishtune.layout import RunLayout

MARKER = ".fishtune-source.json"


def dataset_source(cfg: DictConfig) -> dict | None:
    """The configured dataset source, or None when the dataset is simply ``paths.data``."""
    d = cfg.fetch.dataset
    # not both: fishtune.schema
    if d.path:
        return {"kind": "path", "path": str(d.path)}
    if d.repo_id:
        revision = str(d.revision) if d.revision else "main"  # null: the repo's main branch
        return {"kind": "hub", "repo_id": str(d.repo_id), "revision": revision, "archive": d.archive}
    return None


def top_folder(root: Path, subdir: str | None) -> Path:
    """``root/subdir``; without ``subdir`` the single top folder of ``root`` when it has just one (an archive
    usually holds one: LJSpeech-1.1/...), else ``root``."""
    if subdir:
        return root / subdir
    entries = [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return root


def data_root(cfg: DictConfig) -> Path:
    """The folder ``prepare`` and ``doctor`` read: ``paths.data``, or where ``fetch`` put the dataset."""
    src = dataset_source(cfg)
    if src is None:
        return Path(cfg.paths.data)
    subdir = cfg.fetch.dataset.subdir
    if src["kind"] == "path" and Path(src["path"]).is_dir():
        return Path(src["path"]) / (subdir or "")
    dest = RunLayout.of(cfg).raw
    if not (dest / MARKER).is_file():
        what = src.get("path") or f"{src['repo_id']}@{src['revision']}"
        raise InputError(
            f"the dataset {what} has not been fetched into {dest} yet", hint="run the fetch stage first (STAGE=fetch)"
        )
    return top_folder(dest, subdir)
