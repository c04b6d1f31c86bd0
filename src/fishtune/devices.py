"""Choosing the compute device and describing it."""

from __future__ import annotations

import torch

from fishtune.errors import UsageError


def pick(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"device {name} requested but no CUDA GPU is visible",
            hint="run the container with --gpus all, or use device=auto / cpu",
        )
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"unknown device '{name}'", hint="use auto, cpu, cuda or cuda:N") from err


def dtype_from_name(name: str) -> torch.dtype:
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if name not in table:
        raise UsageError(f"unknown precision '{name}'", hint="use fp32 or bf16")
    return table[name]


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
