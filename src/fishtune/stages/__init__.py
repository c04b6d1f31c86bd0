"""The stage registry: name -> (module, one-line description), in pipeline order."""

from __future__ import annotations

import importlib
from types import ModuleType

STAGES: dict[str, tuple[str, str]] = {
    "fetch": (
        "fishtune.stages.fetch",
        "base weights and dataset from the Hugging Face Hub or an archive (no-op when nothing is missing)",
    ),
    "doctor": (
        "fishtune.stages.doctor",
        "preflight: versions, GPU, disk, base weights and dataset; fails early",
    ),
    "prepare": ("fishtune.stages.prepare", "dataset -> mono clips at the codec rate, .lab text, manifest"),
    "extract": ("fishtune.stages.extract", "clips -> VQ tokens (.npy) with the codec encoder; cached"),
    "pack": ("fishtune.stages.pack", "tokens + text -> protobuf training data, held-out validation split"),
    "train": ("fishtune.stages.train", "LoRA fine-tuning, validated on the held-out split; resumable"),
    "merge": ("fishtune.stages.merge", "LoRA + base -> standalone model folder, validated three ways"),
    "synthesize": ("fishtune.stages.synthesize", "text -> wav with the fine-tuned model (Fish Speech generation)"),
    "evaluate": (
        "fishtune.stages.evaluate",
        "base vs fine-tuned: CER, speaker similarity, duration/silence; report/index.html; picks the best checkpoint",
    ),
    "publish": (
        "fishtune.stages.publish",
        "upload model, LoRA, samples, report and model card to the Hub (no-op without publish.repo_id)",
    ),
    "serve": (
        "fishtune.stages.serve",
        "web page + HTTP API (OpenAI speech shape) on the fine-tuned model, until stopped; serve.after=true: after all",
    ),
}

ALIASES = {"preflight": "doctor"}

# What STAGE=all runs, in order.
CHAIN = ["fetch", "doctor", "prepare", "extract", "pack", "train", "merge", "synthesize", "evaluate", "publish"]


def resolve(name: str) -> str:
    return ALIASES.get(name, name)


def load(name: str) -> ModuleType:
    return importlib.import_module(STAGES[name][0])
