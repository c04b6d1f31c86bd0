"""VQ token files: ``tokens/<speaker>/<clip>.npy`` (int64 ``[num_codebooks, frames]``) + ``.json`` provenance.

The ``.json`` records the sha256 of the clip's audio and of the codec that produced the tokens. A token file
is reused only when both match and the array is intact, so the cache can never go stale.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fishtune.errors import InputError
from fishtune.runstate import atomic_path, write_json_atomic


def paths(tokens_dir: Path, clip_id: str) -> tuple[Path, Path]:
    npy = tokens_dir / f"{clip_id}.npy"
    return npy, npy.with_suffix(".json")


def save(tokens_dir: Path, clip_id: str, codes: np.ndarray, meta: dict) -> Path:
    npy, meta_path = paths(tokens_dir, clip_id)
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(codes.astype(np.int64)))
    write_json_atomic(meta_path, {**meta, "shape": list(codes.shape)})
    return npy


def load(path: str | os.PathLike) -> np.ndarray:
    """Load a token file; a truncated or malformed file is an error naming it."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(
            f"token file {path} is truncated or corrupt ({err})", hint="delete it and rerun the extract stage"
        ) from err
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"token file {path} has shape {arr.shape} / dtype {arr.dtype}, expected int [codebooks, frames]",
            hint="delete it and rerun the extract stage",
        )
    return arr


def is_current(tokens_dir: Path, clip_id: str, audio_sha: str, codec_sha: str) -> bool:
    npy, meta_path = paths(tokens_dir, clip_id)
    if not (npy.is_file() and meta_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("audio_sha256") != audio_sha or meta.get("codec_sha256") != codec_sha:
            return False
        arr = load(npy)
    except (json.JSONDecodeError, OSError, InputError):
        return False
    return list(arr.shape) == meta.get("shape")
