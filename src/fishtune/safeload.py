"""Reading weight files from others as plain data: ``torch.load(weights_only=True)`` with one-line errors.

A ``.pth``/``.ckpt`` is a pickle; unpickled normally it can call any Python function (a shared LoRA or model
folder could run code on load). Every weight file fishtune reads goes through :func:`load`: only tensors and
plain containers are rebuilt, and a file that names anything else is refused with the file and the callable named.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from fishtune.errors import InputError

_GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)|unsupported (?:class|global) ([\w.]+)", re.I)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
CODE_HINT = (
    "the file would run code when loaded, so it was refused (fishtune reads weights as plain data only); "
    "use an adapter or model written by fishtune or Fish Speech, from a source you trust"
)


def reason(err: BaseException) -> tuple[str, bool]:
    """(one-line reason, True when the file was refused for naming code rather than being corrupt)."""
    text = _ANSI_RE.sub("", str(err))
    m = _GLOBAL_RE.search(text)
    if isinstance(err, Exception) and "weights only load failed" in text.lower():
        what = m.group(1) or m.group(2) if m else "a non-tensor object"
        return f"it is not plain data: loading it would call {what}", True
    if "mmap can only be used" in text or "failed finding central directory" in text:
        return "not a torch zip file (truncated, corrupt or not weights)", False
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first[:200], False


def load(path: str | os.PathLike, what: str, hint: str, mmap: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure -> :class:`InputError` naming ``path``."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        why, is_code = reason(err)
        raise InputError(f"cannot load {what} {path}: {why}", hint=CODE_HINT if is_code else hint) from err
