"""Whether ``train.compile`` can work here, asked before any step runs.

torch.compile's default backend, inductor, writes and builds code at run time: on a GPU Triton builds its kernel
launcher with a C compiler against the Python headers (``Python.h``); on the CPU inductor builds C++. The image
carries neither (gcc and the headers would add about 200 MB for an option that is off by default), so without
this check ``train.compile=true`` would fail minutes into training with a compiler traceback. Backends that
generate no code (``eager``, ``aot_eager``, ``cudagraphs``) need nothing.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

from fishtune.errors import InputError

NEEDS_COMPILER = ("inductor",)
HINT = "set train.compile=false (the image has no compiler), or install gcc, g++ and python3-dev (or set CC/CXX)"


def backend_of(setting) -> str | None:
    """``train.compile`` as a backend name, or None when compiling is off."""
    if setting is None or setting is False or str(setting).strip().lower() in ("false", "0", "none", ""):
        return None
    if setting is True or str(setting).strip().lower() == "true":
        return "inductor"
    return str(setting).strip()


def _find(env: str, names: tuple[str, ...]) -> str | None:
    wanted = os.environ.get(env)
    if wanted:
        return shutil.which(wanted) or (wanted if Path(wanted).is_file() else None)
    return next((path for name in names if (path := shutil.which(name))), None)


def compiler_for(device: str) -> str | None:
    """The compiler inductor would use on ``device`` (``cuda``: Triton's C compiler; ``cpu``: a C++ compiler)."""
    if device.startswith("cuda"):
        return _find("CC", ("cc", "gcc", "clang"))
    return _find("CXX", ("c++", "g++", "clang++"))


def compile_problem(setting, device: str = "cuda") -> str | None:
    """One line saying why ``train.compile=<setting>`` cannot work on ``device`` here, or None when it can."""
    backend = backend_of(setting)
    if backend not in NEEDS_COMPILER:
        return None
    kind = "C compiler (cc/gcc/clang, or CC)" if device.startswith("cuda") else "C++ compiler (c++/g++, or CXX)"
    missing = [] if compiler_for(device) else [f"a {kind}"]
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        missing.append("the Python headers (Python.h)")
    if not missing:
        return None
    needs = " and ".join(missing)
    return f"train.compile (torch.compile with {backend}) on {device} needs {needs}: none found here"


def require(setting, device: str = "cuda") -> None:
    """Raise :class:`InputError` (one line) when ``train.compile`` cannot work here."""
    problem = compile_problem(setting, device)
    if problem:
        raise InputError(problem, hint=HINT)
