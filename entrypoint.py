#!/usr/bin/env python3
"""Container entrypoint: ``STAGE=<stage> python entrypoint.py`` or ``python entrypoint.py <stage> [overrides]``."""

import sys
from pathlib import Path

# Works from a source checkout without installation, and in the image where the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from fishtune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
