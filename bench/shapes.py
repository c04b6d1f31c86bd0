"""Model shapes for benchmarks: the tiny test model and openaudio-s1-mini's architecture (source of the values:
:mod:`fishtune.modeling.s1mini`) with random weights."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from fishtune.modeling import s1mini

S1_MINI = s1mini.ARGS
S1_MINI_RESIDUAL = s1mini.RESIDUAL_SIZE


def model_args(shapes: str) -> tuple[dict, int]:
    """-> (DualARModelArgs kwargs, residual codebook size)."""
    if shapes == "s1-mini":
        return dict(S1_MINI), S1_MINI_RESIDUAL
    if shapes == "tiny":
        from fishtune.modeling import tiny

        return tiny.model_args(len(tiny.special_tokens())), tiny.RESIDUAL_SIZE
    raise SystemExit(f"unknown shapes {shapes!r}: use tiny or s1-mini")


def tokenizer(num_semantic: int):
    """A byte-level FishTokenizer with ``num_semantic`` semantic tokens (ids only matter for masks)."""
    from fish_speech.tokenizer import FishTokenizer

    from fishtune.modeling.tiny import special_tokens, write_byte_tokenizer

    path = write_byte_tokenizer(Path(tempfile.mkdtemp(prefix="bench-tok-")) / "tokenizer.tiktoken")
    return FishTokenizer(str(path), special_tokens(num_semantic))


def build_model(shapes: str, seed: int = 0, device="cpu", dtype=torch.float32):
    from fish_speech.models.text2semantic.llama import DualARModelArgs, DualARTransformer

    kwargs, residual = model_args(shapes)
    args = DualARModelArgs(**kwargs)
    tok = tokenizer(args.codebook_size)
    torch.manual_seed(seed)
    with torch.device(device):
        model = DualARTransformer(args, tokenizer=tok)
    return model.to(dtype=dtype), residual


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak (FLOP/s) of known GPUs; BENCH_PEAK_TFLOPS overrides."""
    import os

    if os.environ.get("BENCH_PEAK_TFLOPS"):
        return float(os.environ["BENCH_PEAK_TFLOPS"]) * 1e12
    name = device_name.lower()
    table = [
        ("h200", 989e12),
        ("h100 pcie", 756e12),
        ("h100", 989e12),
        ("a100", 312e12),
        ("l40s", 362e12),
        ("a10", 125e12),
        ("l4", 121e12),
        ("4090", 165e12),
    ]
    for key, peak in table:
        if key in name:
            return peak
    return None
