"""Model shapes for benchmarks: the tiny test model and openaudio-s1-mini's architecture with random weights.

s1-mini's config.json is not in the upstream repository; the values below are the released file's, as found in
a public copy: github.com/zeropointnine/tts-audiobook-tool @ fa6ce9964a2623d851a3d115867c1673fac82f49,
checkpoints/openaudio-s1-mini/config.json (consistent with model.pth's size and special_tokens.json's ids).
The codec is Fish Speech's ``configs/modded_dac_vq.yaml`` (the wheel's copy).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

S1_MINI = dict(
    model_type="dual_ar",
    vocab_size=155776,
    n_layer=28,
    n_head=16,
    n_local_heads=8,
    head_dim=128,
    dim=1024,
    intermediate_size=3072,
    rope_base=1000000,
    norm_eps=1e-6,
    max_seq_len=8192,
    dropout=0.0,
    tie_word_embeddings=False,
    attention_qkv_bias=False,
    attention_o_bias=False,
    attention_qk_norm=True,
    codebook_size=4096,
    num_codebooks=10,
    scale_codebook_embeddings=True,
    use_gradient_checkpointing=True,
    initializer_range=0.03125,
    n_fast_layer=4,
    fast_dim=1024,
    fast_n_head=16,
    fast_n_local_heads=8,
    fast_head_dim=64,
    fast_intermediate_size=3072,
    fast_attention_qkv_bias=False,
    fast_attention_qk_norm=False,
    fast_attention_o_bias=False,
)
# residual codebooks of the s1-mini codec have 1024 entries; codebook 0 (semantic) has 4096
S1_MINI_RESIDUAL = 1024


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
