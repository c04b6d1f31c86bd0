"""A downloaded model folder is checked before it is installed: its weights must be plain data (no pickle that
would run code) and its codec config may name only the allowed codec classes."""

from __future__ import annotations

from pathlib import Path

from fishtune import safeload
from fishtune.modeling.codec import read_codec_config
from fishtune.modeling.files import CODEC_CONFIG


def check_data_only(found: dict[str, Path], where: str) -> None:
    """Refuse a downloaded model folder whose weights are not plain data (a pickle that would run code) or whose
    codec config names a class outside the codec allow-list, before it is installed."""
    for rel, path in sorted(found.items()):
        if rel == CODEC_CONFIG:
            read_codec_config(path)
        elif rel.endswith((".pth", ".ckpt", ".pt")) or Path(rel).name == "pytorch_model.bin":  # torch pickles
            safeload.load(path, f"{rel} of {where}", hint="the download is corrupt; fetch again or use another repo")
