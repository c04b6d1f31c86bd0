"""The model folder layout (openaudio-s1-mini's) and checks on it.

model.pth            dual-AR transformer state dict
config.json          DualARModelArgs
tokenizer.tiktoken   BPE ranks (base64 token + rank per line)
special_tokens.json  special token -> id
codec.pth            DAC codec state dict
codec_config.yaml    (optional, fishtune's) codec architecture; default: Fish Speech's modded_dac_vq.yaml
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fishtune.errors import InputError
from fishtune.runstate import sha256_file, write_json_atomic

LLM_FILES = ("model.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json")
CODEC_FILES = ("codec.pth",)
REQUIRED = LLM_FILES + CODEC_FILES
CODEC_CONFIG = "codec_config.yaml"


def missing_files(model_dir: str | os.PathLike, required: tuple[str, ...] = REQUIRED) -> list[str]:
    d = Path(model_dir)
    return [f for f in required if not (d / f).is_file() or (d / f).stat().st_size == 0]


def check_model_dir(model_dir: str | os.PathLike, required: tuple[str, ...] = REQUIRED) -> Path:
    d = Path(model_dir)
    if not d.is_dir():
        raise InputError(
            f"model folder {d} does not exist",
            hint="run the fetch stage, bake the weights into the image, or set FISHTUNE_MODEL / model.path=...",
        )
    missing = missing_files(d, required)
    if missing:
        raise InputError(
            f"model folder {d} lacks {', '.join(missing)}",
            hint="download the complete openaudio-s1-mini folder (fetch stage) or point model.path at one",
        )
    return d


def file_hash(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """sha256 of a (large) file, cached by path, size and mtime in ``cache_dir/hashes.json``."""
    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = Path(cache_dir) / "hashes.json" if cache_dir else None
    cache: dict[str, str] = {}
    if cache_file and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (json.JSONDecodeError, OSError):
            cache = {}
    if key in cache:
        return cache[key]
    digest = sha256_file(path)
    if cache_file:
        try:
            cache[key] = digest
            write_json_atomic(cache_file, cache)
        except OSError:
            pass  # a read-only cache is fine; we just hash again next time
    return digest


def pinned_files(model_cfg) -> dict[str, dict]:
    """``{file: {"sha256", "bytes"}}`` the model folder must match (``model.files``), or ``{}`` with
    ``model.verify_files=false``."""
    if not model_cfg.verify_files:
        return {}
    return {str(name): dict(pin) for name, pin in (model_cfg.files or {}).items()}


def pin_problems(model_dir: str | os.PathLike, pins: dict[str, dict], cache_dir=None) -> list[str]:
    """One line per file of ``model_dir`` that differs from its pin: the size first (instant), then the sha256."""
    d = Path(model_dir)
    problems = []
    for name, pin in pins.items():
        path = d / name
        if not path.is_file():
            continue  # missing files are reported by check_model_dir / missing_files
        size, want = path.stat().st_size, str(pin.get("sha256", "")).lower()
        if pin.get("bytes") and size != int(pin["bytes"]):
            problems.append(f"{path} is {size:,} bytes, the released file is {int(pin['bytes']):,} bytes")
        elif want and (have := file_hash(path, cache_dir)) != want:
            problems.append(f"{path} has sha256 {have[:12]}…, the released file has {want[:12]}…")
    return problems


PIN_HINT = (
    "download it again (STAGE=fetch fetch.model=always), or, for another model folder on purpose "
    "(e.g. an earlier run's merged model), set model.verify_files=false"
)
