"""Checkpoint files: atomic saves and finding the newest intact one (reading adapters: :mod:`fishtune.adapters`)."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fishtune.errors import StageFailed
from fishtune.runstate import atomic_path

log = logging.getLogger("fishtune.train")
STEP_RE = re.compile(r"step_(\d{9})\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temp file in the same folder and rename: a kill or a full disk never leaves a half file.

    A failed save (e.g. ENOSPC) raises a clear error and leaves earlier checkpoints untouched.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        # Serialise in memory first: torch.save straight to a full disk fails with an obscure zip-writer
        # RuntimeError; a plain write fails with ENOSPC, which we can explain. (LoRA checkpoints are small.)
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                fh.write(buf.getbuffer())
        except OSError as err:
            free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
            raise StageFailed(
                f"could not write checkpoint {path}: {err.strerror or err} "
                f"({buf.tell() / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free)",
                hint="free disk space in the run directory (or set train.keep_checkpoints lower), then rerun train: "
                "it resumes from the previous checkpoint, which is intact",
            ) from err

    def load_checkpoint(self, path, map_location=None):
        """Resume reads the checkpoint as plain data (Lightning's own loader unpickles with weights_only=False)."""
        from fishtune import safeload

        hint = "move it away and rerun train: it resumes from the previous checkpoint"
        return safeload.load(path, "checkpoint", hint=hint, mmap=False)


def step_of(path: Path) -> int:
    m = STEP_RE.search(path.name)
    return int(m.group(1)) if m else -1


def list_steps(folder: Path) -> list[Path]:
    return sorted((p for p in folder.glob("step_*.ckpt") if step_of(p) >= 0), key=step_of)


def is_intact(path: Path) -> bool:
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        return isinstance(ckpt, dict) and "state_dict" in ckpt and "global_step" in ckpt
    except Exception:
        return False


def newest_intact(folder: Path, set_aside: bool = True) -> Path | None:
    """The newest ``step_*.ckpt`` that loads; broken newer ones are renamed ``*.corrupt`` with a warning (by rank
    zero only: ``set_aside=False`` on the other ranks of a DDP job, which skip them the same way)."""
    for path in reversed(list_steps(folder)):
        if is_intact(path):
            return path
        if not set_aside:
            continue
        bad = path.with_suffix(".ckpt.corrupt")
        os.replace(path, bad)
        log.warning("checkpoint %s is corrupt (half-written?): moved to %s, using the previous one", path, bad.name)
    return None
