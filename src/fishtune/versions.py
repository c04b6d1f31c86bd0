"""Versions of the packages whose behaviour the pipeline depends on."""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata

TRACKED = ("fishtune", "torch", "torchaudio", "torchcodec", "protobuf", "fish-speech", "lightning", "numpy")


@cache
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out
