"""FLOP counts of one LoRA training step of the dual-AR model, and the measured matmul peak they are divided by.

**Model FLOPs** (for MFU) count what a frozen-base LoRA step *must* compute, whatever the implementation:

- every base linear (slow and fast layers, ``fast_project_in``, the two heads): its forward ``2·rows·in·out`` and
  its input (activation) gradient ``2·rows·in·out``; a frozen weight needs no weight gradient. Every linear needs
  its input gradient because the embeddings below all layers carry LoRA factors;
- LoRA factors ``A [r, in]``, ``B [out, r]`` on a linear: forward ``2·rows·r·(in+out)``, input gradient the same,
  weight gradients of A and B the same again: ``6·rows·r·(in+out)``;
- attention: per layer and row of ``t`` real tokens, QKᵀ and PV over the causal half of the square, ``2·t²·h·d``
  forward and twice that backward: ``6·t²·h·d`` (t = num_codebooks for the fast transformer, per audio frame);
- the slow layers run over the real tokens only (padding is not model work), the token head only over rows that
  carry a target, the fast transformer over the audio frames (``frames · num_codebooks`` rows) and the codebook
  head over its targets.

Left out of both counts: norms, RoPE, softmax, SiLU, embedding gathers and the embeddings' LoRA (a gather plus an
``r × dim`` product per looked-up row: under 0.02% of a step at s1-mini's shapes).

**Hardware FLOPs** (for HFU) add what a given way of running the step computes beyond that: padded positions,
the full square of attention when an explicit mask is passed (SDPA's masked kernels and the fast transformer's
manual attention compute every query-key pair), one more forward of every gradient-checkpointed layer, the head
over every position when the whole ``[tokens, vocab]`` logits are made, and one more head forward per chunk when
the chunked cross-entropy recomputes its logits in backward. Kernel-internal recomputation (a flash kernel's
backward recomputes QKᵀ) is counted in neither; a non-reentrant checkpoint skips its layer's last product (LoRA's B
of ``w2``, ``2·rows·r·dim``) in the recompute, which the HFU count includes.

``tests/test_flops.py`` checks both against a hand count on a toy shape, and the hardware count against torch's
``FlopCounterMode`` on real training steps of the tiny model (upstream's step and the product's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class Arch:
    """The shapes the count needs, from a ``DualARModelArgs`` (:meth:`from_config`)."""

    dim: int
    n_layer: int
    n_head: int
    n_local_heads: int
    head_dim: int
    ffn: int
    vocab: int
    fast_dim: int
    n_fast_layer: int
    fast_n_head: int
    fast_n_local_heads: int
    fast_head_dim: int
    fast_ffn: int
    codebook_size: int
    num_codebooks: int
    lora_r: int = 0  # 0: no LoRA
    head_lora: bool = True  # the token head is a LoRA-adapted linear (False when tied to the embeddings)

    @classmethod
    def from_config(cls, cfg, lora_r: int) -> Arch:
        return cls(
            cfg.dim,
            cfg.n_layer,
            cfg.n_head,
            cfg.n_local_heads,
            cfg.head_dim,
            cfg.intermediate_size,
            cfg.vocab_size,
            cfg.fast_dim,
            cfg.n_fast_layer,
            cfg.fast_n_head,
            cfg.fast_n_local_heads,
            cfg.fast_head_dim,
            cfg.fast_intermediate_size,
            cfg.codebook_size,
            cfg.num_codebooks,
            lora_r,
            not cfg.tie_word_embeddings,
        )

    def layer_linears(self, fast: bool) -> list[tuple[int, int]]:
        """(in, out) of each LoRA-adapted linear of one layer: wqkv, wo, w1, w3, w2."""
        if fast:
            d, h, kv, hd, f = (
                self.fast_dim,
                self.fast_n_head,
                self.fast_n_local_heads,
                self.fast_head_dim,
                self.fast_ffn,
            )
        else:
            d, h, kv, hd, f = self.dim, self.n_head, self.n_local_heads, self.head_dim, self.ffn
        return [(d, (h + 2 * kv) * hd), (h * hd, d), (d, f), (d, f), (f, d)]


@dataclass(frozen=True)
class Work:
    """What one batch asks for (:meth:`from_batch`)."""

    lengths: tuple[int, ...]  # real tokens per row
    width: int  # row length as computed (the batch's padded length)
    token_targets: int  # positions whose token label is not ignored
    frames: int  # positions whose label is a semantic token: the fast transformer's sequences
    codebook_targets: int  # fast-head rows with a target (at most frames x num_codebooks)

    @classmethod
    def from_batch(cls, model, batch: dict) -> Work:
        from fishtune.training.forward import semantic_mask

        labels = batch["labels"]
        pad = batch.get("key_padding_mask")
        width = labels.shape[-1]
        lengths = (~pad).sum(dim=1).tolist() if pad is not None else [width] * labels.shape[0]
        sel = semantic_mask(model, labels[:, 0])
        cb = labels[:, 1:].permute(0, 2, 1)[sel]
        return cls(
            tuple(int(t) for t in lengths),
            int(width),
            int((labels[:, 0] != IGNORE).sum()),
            int(sel.sum()),
            int((cb != IGNORE).sum()),
        )


@dataclass(frozen=True)
class Execution:
    """How a setting runs the step: what it computes beyond the model FLOPs."""

    checkpointed_slow: int = 0  # slow layers recomputed in backward
    checkpointed_fast: int = 0
    slow_mask: bool = False  # an explicit attention mask: the kernel computes the full square
    fast_mask: bool = False
    head_all_rows: bool = False  # logits for every position (full-logit cross-entropy)
    ce_recompute: bool = False  # chunked cross-entropy: the heads' forward again in backward


def _attention_forward(pairs: float, heads: int, head_dim: int) -> float:
    """QKᵀ and PV over ``pairs`` query-key pairs."""
    return 2 * 2 * pairs * heads * head_dim


def _lora(arch: Arch, rows: float, fan_in: int, fan_out: int) -> float:
    return 6 * rows * arch.lora_r * (fan_in + fan_out) if arch.lora_r else 0.0


def _linears(arch: Arch, rows: float, fast: bool) -> tuple[float, float]:
    """(base forward + input gradient, LoRA forward + backward) of one layer's linears over ``rows``."""
    pairs = arch.layer_linears(fast)
    return sum(4 * rows * i * o for i, o in pairs), sum(_lora(arch, rows, i, o) for i, o in pairs)


def model_flops(arch: Arch, work: Work) -> dict[str, float]:
    """Model FLOPs of one step, by part, and ``total``."""
    tokens = sum(work.lengths)
    fast_rows = work.frames * arch.num_codebooks
    slow_lin, slow_lora = _linears(arch, tokens, fast=False)
    fast_lin, fast_lora = _linears(arch, fast_rows, fast=True)
    head_lora = _lora(arch, work.token_targets, arch.dim, arch.vocab) if arch.head_lora else 0.0
    causal_pairs = sum(t * t for t in work.lengths) / 2
    parts = {
        "slow_linears": arch.n_layer * slow_lin,
        "slow_attention": 3 * arch.n_layer * _attention_forward(causal_pairs, arch.n_head, arch.head_dim),
        "token_head": 4 * work.token_targets * arch.dim * arch.vocab,
        "fast_project_in": 4 * work.frames * arch.dim * arch.fast_dim if arch.dim != arch.fast_dim else 0.0,
        "fast_linears": arch.n_fast_layer * fast_lin,
        "fast_attention": 3
        * arch.n_fast_layer
        * _attention_forward(work.frames * arch.num_codebooks**2 / 2, arch.fast_n_head, arch.fast_head_dim),
        "codebook_head": 4 * work.codebook_targets * arch.fast_dim * arch.codebook_size,
        "lora": arch.n_layer * slow_lora
        + arch.n_fast_layer * fast_lora
        + head_lora
        + _lora(arch, work.codebook_targets, arch.fast_dim, arch.codebook_size),
    }
    parts["total"] = sum(parts.values())
    return parts


def _layer_forward(arch: Arch, rows: float, pairs: float, fast: bool) -> float:
    """One forward of one layer (base + LoRA linears, attention over ``pairs``): what a recompute costs."""
    lin, lora = _linears(arch, rows, fast)
    h, d = (arch.fast_n_head, arch.fast_head_dim) if fast else (arch.n_head, arch.head_dim)
    return lin / 2 + lora / 3 + _attention_forward(pairs, h, d)


def _head(arch: Arch, rows: float, fan_in: int, fan_out: int, lora: bool) -> tuple[float, float]:
    """(forward + input gradient + LoRA, one more forward) of a head over ``rows``."""
    lora_all = _lora(arch, rows, fan_in, fan_out) if lora else 0.0
    return 4 * rows * fan_in * fan_out + lora_all, 2 * rows * fan_in * fan_out + lora_all / 3


def hardware_flops(arch: Arch, work: Work, run: Execution) -> dict[str, float]:
    """FLOPs the step's kernels compute when run as ``run`` (model FLOPs plus the extras above), and ``total``."""
    rows_all = len(work.lengths) * work.width  # padded positions run through every layer
    fast_rows = work.frames * arch.num_codebooks
    nc = arch.num_codebooks
    slow_pairs = len(work.lengths) * work.width**2 if run.slow_mask else sum(t * t for t in work.lengths) / 2
    fast_pairs = work.frames * (nc * nc if run.fast_mask else nc * nc / 2)
    slow_lin, slow_lora = _linears(arch, rows_all, fast=False)
    fast_lin, fast_lora = _linears(arch, fast_rows, fast=True)
    head_rows = rows_all if run.head_all_rows else work.token_targets
    token_head, token_again = _head(arch, head_rows, arch.dim, arch.vocab, arch.head_lora)
    cb_head, cb_again = _head(arch, work.codebook_targets, arch.fast_dim, arch.codebook_size, True)
    parts = {
        "slow_layers": arch.n_layer * (slow_lin + slow_lora)
        + 3 * arch.n_layer * _attention_forward(slow_pairs, arch.n_head, arch.head_dim),
        "fast_project_in": 4 * work.frames * arch.dim * arch.fast_dim if arch.dim != arch.fast_dim else 0.0,
        "fast_layers": arch.n_fast_layer * (fast_lin + fast_lora)
        + 3 * arch.n_fast_layer * _attention_forward(fast_pairs, arch.fast_n_head, arch.fast_head_dim),
        "heads": token_head + cb_head,
        "recompute_layers": run.checkpointed_slow * _layer_forward(arch, rows_all, slow_pairs, fast=False)
        + run.checkpointed_fast * _layer_forward(arch, fast_rows, fast_pairs, fast=True),
        "recompute_heads": token_again + cb_again if run.ce_recompute else 0.0,
    }
    parts["total"] = sum(parts.values())
    return parts


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, seconds: float = 2.0) -> dict:
    """The best FLOP/s of an ``n × n × n`` matmul in ``dtype`` on ``device``, over about ``seconds`` of repeats
    (after a warm-up): the peak that MFU and HFU are measured against, in the same run as the step timings."""
    n = n or (8192 if device.type == "cuda" else 1024)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    for _ in range(3):
        a @ b
    sync(device)
    best, spent, reps = float("inf"), 0.0, 0
    while spent < seconds or reps < 3:
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        sync(device)
        dt = (time.perf_counter() - t0) / 5
        best, spent, reps = min(best, dt), spent + 5 * dt, reps + 1
    del a, b
    return {"matmul": f"{n}x{n}x{n} {str(dtype).removeprefix('torch.')}", "flops_per_second": 2 * n**3 / best}
