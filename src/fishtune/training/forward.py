"""The dual-AR training forward and loss, on Fish Speech's modules.

Fish Speech 0.1.0's ``DualARTransformer.forward`` cannot run (it passes arguments its base class does not take),
so this module composes the model's own layers the way its inference path (``forward_generate`` +
``forward_generate_fast``) does, for a whole sequence at once:

1. slow transformer over ``inputs [B, 1+nc, T]``: token embedding + the sum of the codebook embeddings at
   semantic positions, divided by sqrt(nc+1) when the config sets ``scale_codebook_embeddings`` (as inference
   does; upstream's trainer omitted it), causal attention with key padding, final norm, token head;
2. fast transformer over the codebooks, at every position whose *label* is a semantic token: input is the slow
   hidden state followed by the embeddings of that frame's codes 0..nc-2 (teacher forcing), output predicts
   codes 0..nc-1.

Loss = cross-entropy of the token head on ``labels[:, 0]`` + cross-entropy of the fast head on the codes,
each averaged over its non-ignored targets (upstream's definition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

IGNORE = -100
# rows per call of the fast transformer: CUDA attention kernels limit the grid to 65,535 blocks per batch axis
FAST_ROWS = 32768


@dataclass
class ForwardOut:
    token_logits: Tensor  # [B, T, vocab]
    codebook_logits: Tensor  # [N, nc, codebook_size]
    codebook_labels: Tensor  # [N, nc]


def semantic_mask(model, ids: Tensor) -> Tensor:
    tok = model.tokenizer
    return (ids >= tok.semantic_begin_id) & (ids <= tok.semantic_end_id)


def embed(model, inputs: Tensor) -> Tensor:
    cfg = model.config
    offsets = torch.arange(cfg.num_codebooks, device=inputs.device)[None, :, None] * cfg.codebook_size
    codes = model.codebook_embeddings(inputs[:, 1:] + offsets).sum(dim=1)  # [B, T, dim]
    is_sem = semantic_mask(model, inputs[:, 0])
    x = model.embeddings(inputs[:, 0])
    codes = codes * is_sem[..., None].to(codes.dtype)
    x = x + codes
    if getattr(cfg, "scale_codebook_embeddings", False):
        x = torch.where(is_sem[..., None], x / math.sqrt(cfg.num_codebooks + 1), x)
    return x


@dataclass
class Hidden:
    slow: Tensor  # [B, T, dim], after the final norm
    fast: Tensor  # [N, nc, fast_dim], after the fast norm
    codebook_labels: Tensor  # [N, nc]


def token_head(model, h: Tensor) -> Tensor:
    return F.linear(h, model.embeddings.weight) if model.config.tie_word_embeddings else model.output(h)


def flash_ok(layers, x: Tensor) -> bool:
    """Whether ``layers`` can run causal attention without an explicit mask.

    Fish Speech's attention, given ``mask=None``, runs ``scaled_dot_product_attention(is_causal=True)`` restricted
    to the flash kernel (without SDPA, ``mask=None`` would mean *no* masking). That kernel exists on the CPU and,
    on CUDA, for bf16/fp16 only; elsewhere the explicit mask is passed (SDPA then picks a masked kernel).
    """
    if not all(layer.attention.use_sdpa for layer in layers):
        return False
    return x.device.type == "cpu" or x.dtype in (torch.bfloat16, torch.float16)


def use_sdpa_everywhere(model) -> None:
    """Fish Speech builds the fast transformer with its manual attention (an inference workaround); training runs
    it through SDPA as well. Same result (tested); only the kernel differs."""
    for layer in list(model.layers) + list(model.fast_layers):
        layer.attention.use_sdpa = True


def compile_layers(model, backend: str = "inductor", device: str | None = None) -> None:
    """``torch.compile`` every transformer layer in place (parameter names stay the same, so checkpoints and LoRA
    state dicts are unaffected). Training batches of filled rows have one shape, so the slow layers compile once
    for it; a second shape (validation) makes torch compile a dynamic-shape version, not one per shape.
    Refuses with one line, before anything is compiled, where the backend needs a compiler this machine lacks for
    ``device`` (the device type training runs on; default: where the model is now)."""
    from fishtune.training import compiler

    compiler.require(backend, device or next(model.parameters()).device.type)
    for layer in list(model.layers) + list(model.fast_layers):
        layer.compile(backend=backend)


def num_units(model) -> int:
    """Checkpointable units: the fast layers, then the slow layers.

    Fast layers come first: they run over ~num_codebooks positions per audio frame, so each holds several times
    a slow layer's activations, and recomputing them costs no attention over the long sequence (a slow layer's
    causal attention over T tokens adds about half again to its compute but stores little with flash). So they
    free the most memory per recomputed FLOP."""
    return len(model.layers) + len(model.fast_layers)


def checkpointed_units(model, gradient_checkpointing) -> int:
    """``True``: every layer; ``False``/0: none; an int ``n``: the first ``n`` units (fast layers first)."""
    if gradient_checkpointing is True:
        return num_units(model)
    if gradient_checkpointing is False or gradient_checkpointing is None:
        return 0
    return max(0, min(int(gradient_checkpointing), num_units(model)))


def _run(layers, x: Tensor, freqs: Tensor, mask: Tensor | None, checkpointed: int) -> Tensor:
    for i, layer in enumerate(layers):
        x = checkpoint(layer, x, freqs, mask, use_reentrant=False) if i < checkpointed else layer(x, freqs, mask)
    return x


def hidden(
    model,
    inputs: Tensor,
    labels: Tensor,
    key_padding_mask: Tensor | None = None,
    gradient_checkpointing: bool | int = False,
) -> Hidden:
    """``gradient_checkpointing``: see :func:`checkpointed_units` (only applies in training mode).

    Without padding (every row full, as training's filled packing makes it) the slow transformer runs the flash
    kernel with ``is_causal``; with padding, an explicit causal + key-padding mask (a slower kernel).
    """
    cfg = model.config
    B, _, T = inputs.shape
    n_ckpt = checkpointed_units(model, gradient_checkpointing) if model.training and torch.is_grad_enabled() else 0
    x = embed(model, inputs)
    freqs = model.freqs_cis[:T]
    padded = key_padding_mask is not None and bool(key_padding_mask.any())
    if padded:
        mask = model.causal_mask[None, None, :T, :T] & ~key_padding_mask[:, None, None, :]
    else:
        mask = None if flash_ok(model.layers, x) else model.causal_mask[None, None, :T, :T]
    n_fast_ckpt = min(n_ckpt, len(model.fast_layers))
    x = _run(model.layers, x, freqs, mask, n_ckpt - n_fast_ckpt)
    slow = model.norm(x)

    sel = semantic_mask(model, labels[:, 0])  # positions whose next token is a semantic token
    cb_labels = labels[:, 1:].permute(0, 2, 1)[sel]  # [N, nc]
    h = model.fast_project_in(x[sel])  # [N, fast_dim]
    fast_in = torch.cat([h[:, None], model.fast_embeddings(cb_labels[:, :-1].clamp_min(0))], dim=1)
    nc = cfg.num_codebooks
    fmask = None if flash_ok(model.fast_layers, fast_in) else model.causal_mask[None, None, :nc, :nc]
    ffreqs = model.fast_freqs_cis[:nc]
    # no audio frame in the batch (a row cut inside its text): nothing for the fast transformer to do
    chunks = fast_in.split(FAST_ROWS) if fast_in.shape[0] else ()
    fast = torch.cat([_run(model.fast_layers, c, ffreqs, fmask, n_fast_ckpt) for c in chunks]) if chunks else fast_in
    return Hidden(slow, model.fast_norm(fast), cb_labels)


def forward(
    model,
    inputs: Tensor,
    labels: Tensor,
    key_padding_mask: Tensor | None = None,
    gradient_checkpointing: bool | int = False,
) -> ForwardOut:
    """Full logits (for checks and tests; training uses :func:`loss`, which need not materialise them all)."""
    h = hidden(model, inputs, labels, key_padding_mask, gradient_checkpointing)
    return ForwardOut(token_head(model, h.slow), model.fast_output(h.fast), h.codebook_labels)


@dataclass
class LossOut:
    loss: Tensor
    base_loss: Tensor
    semantic_loss: Tensor
    top5_accuracy: Tensor
    semantic_targets: int
    tokens: int


def _ce_chunk(head, h: Tensor, y: Tensor, top5: bool) -> tuple[Tensor, Tensor]:
    logits = head(h).float()
    loss = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")
    if not top5:
        return loss, torch.zeros((), device=h.device, dtype=torch.long)
    with torch.no_grad():
        best = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        hits = ((best == y[:, None]).any(-1) & (y != IGNORE)).sum()
    return loss, hits


def cross_entropy(
    head, h: Tensor, y: Tensor, chunk: int, checkpointed: bool, top5: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Sum of CE and top-5 hits of ``head(h)`` against ``y`` over the non-ignored rows, ``chunk`` rows at a time.
    ``top5=False`` skips the hit count (0): a top-k over a 155,776-way head is not free.

    With ``checkpointed`` each chunk's logits are recomputed in the backward pass instead of being stored, so
    memory holds one chunk of ``[chunk, vocab]`` logits instead of all of them (s1-mini's token head has 155,776
    outputs: 8 x 4096 positions of fp32 logits would be 20 GB). Rows with an ignored target are skipped entirely.
    Returns (loss_sum, hits, count).
    """
    keep = y != IGNORE
    h, y = h[keep], y[keep]
    count = keep.sum()
    hits = torch.zeros((), device=h.device, dtype=torch.long)
    if h.shape[0] == 0:
        return h.sum() * 0.0, hits, count
    chunk = chunk if chunk > 0 else h.shape[0]
    total = h.new_zeros((), dtype=torch.float32)
    for i in range(0, h.shape[0], chunk):
        if checkpointed and torch.is_grad_enabled():
            part, hit = checkpoint(_ce_chunk, head, h[i : i + chunk], y[i : i + chunk], top5, use_reentrant=False)
        else:
            part, hit = _ce_chunk(head, h[i : i + chunk], y[i : i + chunk], top5)
        total = total + part
        hits = hits + hit
    return total, hits, count


def loss(model, batch: dict, gradient_checkpointing: bool | int = False, ce_chunk: int = 0) -> LossOut:
    """Upstream's loss. ``ce_chunk > 0``: chunked, recomputed cross-entropy (same value, far less memory)."""
    labels = batch["labels"]
    h = hidden(model, batch["inputs"], labels, batch.get("key_padding_mask"), gradient_checkpointing)
    chunked = ce_chunk > 0
    b_sum, _, b_n = cross_entropy(
        lambda x: token_head(model, x),
        h.slow.reshape(-1, h.slow.shape[-1]),
        labels[:, 0].reshape(-1),
        ce_chunk,
        chunked,
        top5=False,  # only the codebook accuracy is reported
    )
    c_sum, c_hits, c_n = cross_entropy(
        model.fast_output, h.fast.reshape(-1, h.fast.shape[-1]), h.codebook_labels.reshape(-1), ce_chunk, chunked
    )
    base = b_sum / b_n.clamp_min(1)
    sem = c_sum / c_n.clamp_min(1)  # 0 for a batch without audio frames (only possible with broken data)
    acc = c_hits.float() / c_n.clamp_min(1)
    pad = batch.get("key_padding_mask")
    tokens = int((~pad).sum()) if pad is not None else int(labels[:, 0].numel())
    return LossOut(base + sem, base.detach(), sem.detach(), acc.detach(), int(h.codebook_labels.shape[0]), tokens)
