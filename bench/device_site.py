"""Install the carried wheels (``.whl/``) that this Python lacks into a separate folder, never one it already has.

``PYTHONPATH`` comes before site-packages, so a carried package that the machine also has would shadow the
machine's own (a bundled protobuf 3.20.3 broke tensorboard's import on a machine with current packages). This
installs only the wheels whose distribution is not installed here, and then checks that nothing in the folder
shadows an installed distribution.

    python3 bench/device_site.py .whl /tmp/site      # prints what it installed and what it left to the machine
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> set[str]:
    """Distributions visible to this interpreter (before the carried folder is on the path)."""
    return {_norm(d.metadata["Name"]) for d in md.distributions() if d.metadata["Name"]}


def plan(wheels: list[Path], have: set[str]) -> tuple[list[Path], list[str]]:
    """-> (wheels to install, names the machine already has)."""
    install, kept = [], []
    for w in sorted(wheels):
        name = _norm(w.name.split("-")[0])
        (kept.append(name) if name in have else install.append(w))
    return install, kept


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    wheels_dir, target = Path(args[0]), Path(args[1])
    have = installed()
    install, kept = plan(list(wheels_dir.glob("*.whl")), have)
    if install:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        subprocess.run([*pip, "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, install)], check=True)
    shadowing = sorted(
        _norm(p.name.split("-")[0]) for p in target.glob("*.dist-info") if _norm(p.name.split("-")[0]) in have
    )
    print(f"carried: {', '.join(_norm(w.name.split('-')[0]) for w in install) or 'nothing'}")
    print(f"the machine's own (not carried): {', '.join(kept) or 'none'}")
    if shadowing:
        print(f"error: {target} shadows the machine's {', '.join(shadowing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
