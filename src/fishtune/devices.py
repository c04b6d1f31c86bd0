"""Choosing the compute device and describing it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fishtune import distributed
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


@dataclass(frozen=True)
class Placement:
    """Where training runs: Lightning's accelerator/devices/num_nodes and this process's own device."""

    accelerator: str  # "gpu" | "cpu"
    devices: int | list[int]  # per node: a count, or [index] for one chosen GPU
    num_nodes: int
    device: torch.device  # this process's device (its local rank's GPU)

    @property
    def per_node(self) -> int:
        return len(self.devices) if isinstance(self.devices, list) else self.devices

    @property
    def world_size(self) -> int:
        return self.per_node * self.num_nodes


def _count(value, what: str) -> int | None:
    """``auto`` -> None, else a positive int (the schema checked it already; this names a bad override)."""
    if str(value) == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UsageError(f"{what} must be auto or a number >= 1, not {value!r}")
    return n


def placement(device: str, devices, num_nodes) -> Placement:
    """Resolve ``train.device``/``train.devices``/``train.num_nodes``. ``devices: auto`` is every visible GPU (one
    process on the CPU); under torchrun/srun both follow the launcher, and a number that disagrees is an error."""
    want, nodes = _count(devices, "train.devices"), _count(num_nodes, "train.num_nodes")
    dev = pick(device)
    launched = distributed.launched_world()
    gpu = dev.type == "cuda"
    if gpu and dev.index is not None:  # one chosen GPU
        if (want or 1) != 1 or launched:
            raise UsageError(f"train.device={device} names one GPU, but train.devices={devices} asks for more",
                             hint="use train.device=cuda (or auto) with train.devices=N")  # fmt: skip
        return Placement("gpu", [dev.index], nodes or 1, dev)
    if launched:
        local, launched_nodes = launched
        for value, have, key in ((want, local, "train.devices"), (nodes, launched_nodes, "train.num_nodes")):
            if value is not None and value != have:
                raise UsageError(f"{key}={value} but the launcher started {have} (torchrun/srun decide)",
                                 hint=f"leave {key}=auto under a launcher")  # fmt: skip
        want, nodes = local, launched_nodes
    visible = torch.cuda.device_count() if gpu else 1
    n = want or visible
    if gpu and n > visible:
        raise UsageError(f"train.devices={n} but {visible} GPU(s) are visible", hint="use train.devices=auto")
    local_rank = distributed.local_rank()
    return Placement("gpu" if gpu else "cpu", n, nodes or 1, torch.device("cuda", local_rank) if gpu else dev)
