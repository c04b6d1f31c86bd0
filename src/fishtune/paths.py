"""Where a path really leads: the one containment check every dataset reader and archive extraction use.

Links are resolved by the file system (``os.path.realpath``), never by reading the text of a path, so a chain of
relative links (``a/up0 -> ..``, ``a/up1 -> up0/..``, ...) is followed to where it actually ends.
"""

from __future__ import annotations

import os
from pathlib import Path


def real(path: str | os.PathLike) -> Path:
    """``path`` with every link followed (as far as the links exist)."""
    return Path(os.path.realpath(path))


def inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when ``path``, links followed for real, is ``root`` or lies under it (``root``'s links followed too)."""
    return real(path).is_relative_to(real(root))


def links_leaving(root: str | os.PathLike) -> list[Path]:
    """Every symbolic link under ``root`` (walked without following links) that resolves outside ``root``."""
    root = Path(root)
    bad = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            if p.is_symlink() and not inside(root, p):
                bad.append(p)
    return sorted(bad)
