"""Who this process is in a multi-process job, read from the launcher's environment (no process group needed).

Three launchers start fishtune more than once:

- ``torchrun --nproc-per-node N`` (and a Kubernetes PyTorchJob, which runs torchrun): ``RANK``, ``LOCAL_RANK``,
  ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``;
- Slurm's ``srun`` (one task per GPU): ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS``, ``SLURM_NNODES``;
- Lightning itself, for ``train.devices`` > 1 on one host without a launcher: it re-runs the same command with
  ``LOCAL_RANK`` = 1 … N-1 once training starts.

Rank zero is the process whose every rank variable is 0: it alone holds the run lock and writes ``status.json``,
checkpoints, ``lora.pth``, metrics, summaries and the hub sync. The other ranks run the training stage only
(:func:`stages_for_this_process`).
"""

from __future__ import annotations

import os

from fishtune.errors import UsageError

_RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
DISTRIBUTED_STAGES = ("train",)  # the stages every rank runs; the others run on rank zero only


def _int(name: str, default: int = 0) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def is_rank_zero() -> bool:
    """True unless a launcher made this process a non-zero rank."""
    return all(_int(v) == 0 for v in _RANK_VARS)


def global_rank() -> int:
    """This process's rank across every host (0 without a launcher)."""
    return _int("RANK", _int("SLURM_PROCID", 0))


def local_rank() -> int:
    """This process's index on its host (its GPU)."""
    return _int("LOCAL_RANK", _int("SLURM_LOCALID", 0))


def slurm_tasks() -> int:
    """Tasks of this Slurm step (1 outside ``srun``; an interactive allocation's shell is one task)."""
    return _int("SLURM_NTASKS", 1) if "SLURM_PROCID" in os.environ else 1


def launched_world() -> tuple[int, int] | None:
    """``(processes per node, nodes)`` when torchrun or srun started several processes, else None."""
    world = _int("WORLD_SIZE", 1)
    if "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and world > 1):
        local = _int("LOCAL_WORLD_SIZE", world)
        return local, max(1, world // max(local, 1))
    tasks = slurm_tasks()
    if tasks > 1:
        nodes = max(1, _int("SLURM_NNODES", 1))
        return max(1, tasks // nodes), nodes
    return None


def stages_for_this_process(names: list[str]) -> list[str]:
    """The stages of ``names`` this process runs: all of them on rank zero, the training stage only on the others.
    Under torchrun/srun every rank runs the whole command, so one that also prepares data would race rank zero:
    it is refused (on every rank) with a hint."""
    others = [n for n in names if n not in DISTRIBUTED_STAGES]
    if others and launched_world() is not None:
        raise UsageError(
            f"under torchrun/srun every process runs the command: run STAGE=train there, not {','.join(names)}",
            hint="run the other stages once in one process first (e.g. STAGE=prepare,extract,pack), then "
            "torchrun ... STAGE=train; on one host STAGE=all train.devices=auto needs no launcher",
        )
    return list(names) if is_rank_zero() else [n for n in names if n in DISTRIBUTED_STAGES]
