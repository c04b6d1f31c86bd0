"""Shared helpers: timing, memory, JSON output, synthetic data shaped like the Finnish recipe."""

from __future__ import annotations

import json
import platform
import random
import resource
import string
import sys
import time
from pathlib import Path

import numpy as np
import torch

FRAME_RATE = 44100 / 2048  # codec frames per second


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    """GPU: peak allocated by torch. CPU: the process's peak resident set (includes everything loaded)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Timer:
    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self.t0


def recipe_durations(n: int, seed: int = 0) -> list[float]:
    """Clip durations like the Finnish recipe: 2000 clips, ~4 h (mean ~7.2 s), clipped to 1-20 s."""
    rng = np.random.default_rng(seed)
    return [float(x) for x in np.clip(rng.normal(7.2, 2.5, n), 1.0, 20.0)]


def synthetic_utterances(n: int, num_codebooks: int, semantic: int, residual: int, seed: int = 0):
    """Utterances with recipe-like durations, random Finnish-looking text and random codes."""
    from fishtune.training.samples import Utterance

    rng = np.random.default_rng(seed)
    letters = string.ascii_lowercase + "äö"
    pyrng = random.Random(seed)
    out = []
    for d in recipe_durations(n, seed):
        frames = max(1, round(d * FRAME_RATE))
        codes = np.concatenate(
            [rng.integers(0, semantic, (1, frames)), rng.integers(0, residual, (num_codebooks - 1, frames))]
        )
        words = ["".join(pyrng.choice(letters) for _ in range(pyrng.randint(2, 9))) for _ in range(int(d * 2.2))]
        out.append(Utterance(" ".join(words).capitalize() + ".", codes))
    return out


def write_json(result: dict, out: str | None, name: str) -> Path:
    path = Path(out) if out else Path("bench-results") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return path


def product_defaults() -> dict:
    """The product's training defaults, read from ``configs/`` (the only place defaults live): batch shape, LoRA,
    cross-entropy chunk, memory fraction, and what ``preset=24gb`` changes."""
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = OmegaConf.load(root / "config.yaml")
    t, lo = cfg.train, cfg.lora
    mem24 = OmegaConf.load(root / "preset" / "24gb.yaml").train
    return {
        "batch_size": int(t.batch_size),
        "max_length": int(t.max_length),
        "lr": float(t.lr),
        "betas": tuple(float(b) for b in t.betas),
        "eps": float(t.eps),
        "lora": {"r": int(lo.r), "alpha": float(lo.alpha), "dropout": float(lo.dropout)},
        "packing": str(t.packing),
        "gradient_checkpointing": t.gradient_checkpointing,
        "ce_chunk": int(t.ce_chunk),
        "memory_fraction": float(t.memory_fraction),
        "preset_24gb": {"memory_limit_gb": float(mem24.memory_limit_gb), "ce_chunk": int(mem24.ce_chunk)},
    }
