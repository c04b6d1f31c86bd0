"""Fault injection for the tests: a real ``kill -9`` at an exact place.

``FISHTUNE_KILL_AT=<point>[@<n>]`` makes the process send itself SIGKILL the n-th time (default: first) it
reaches a point whose name matches ``<point>`` (a glob). Points are named where a kill hurts most, e.g.
``write:<file name>`` (a file fully written under its temporary name, not yet renamed into place),
``merge:written``, ``merge:swap``. Without the variable a point costs one dictionary lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys

ENV = "FISHTUNE_KILL_AT"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    pattern, _, nth = spec.partition("@")
    if not fnmatch.fnmatchcase(name, pattern):
        return
    _hits[pattern] = _hits.get(pattern, 0) + 1
    if _hits[pattern] >= int(nth or 1):
        sys.stdout.flush()
        sys.stderr.write(f"fault injection: SIGKILL at {name}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
