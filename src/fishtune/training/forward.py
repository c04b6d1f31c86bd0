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


def forward(
    model, inputs: Tensor, labels: Tensor, key_padding_mask: Tensor | None = None, gradient_checkpointing: bool = False
) -> ForwardOut:
    cfg = model.config
    B, _, T = inputs.shape
    x = embed(model, inputs)
    freqs = model.freqs_cis[:T]
    mask = model.causal_mask[None, None, :T, :T]
    if key_padding_mask is not None:
        mask = mask & ~key_padding_mask[:, None, None, :]
    for layer in model.layers:
        if gradient_checkpointing and model.training:
            x = checkpoint(layer, x, freqs, mask, use_reentrant=False)
        else:
            x = layer(x, freqs, mask)
    slow = model.norm(x)
    token_logits = F.linear(slow, model.embeddings.weight) if cfg.tie_word_embeddings else model.output(slow)

    sel = semantic_mask(model, labels[:, 0])  # positions whose next token is a semantic token
    cb_labels = labels[:, 1:].permute(0, 2, 1)[sel]  # [N, nc]
    h = model.fast_project_in(x[sel])  # [N, fast_dim]
    fast_in = torch.cat([h[:, None], model.fast_embeddings(cb_labels[:, :-1].clamp_min(0))], dim=1)
    nc = cfg.num_codebooks
    fmask = model.causal_mask[None, None, :nc, :nc]
    ffreqs = model.fast_freqs_cis[:nc]
    for layer in model.fast_layers:
        if gradient_checkpointing and model.training:
            fast_in = checkpoint(layer, fast_in, ffreqs, fmask, use_reentrant=False)
        else:
            fast_in = layer(fast_in, ffreqs, fmask)
    codebook_logits = model.fast_output(model.fast_norm(fast_in))
    return ForwardOut(token_logits, codebook_logits, cb_labels)


@dataclass
class LossOut:
    loss: Tensor
    base_loss: Tensor
    semantic_loss: Tensor
    top5_accuracy: Tensor
    semantic_targets: int
    tokens: int


def loss(model, batch: dict, gradient_checkpointing: bool = False) -> LossOut:
    out = forward(model, batch["inputs"], batch["labels"], batch.get("key_padding_mask"), gradient_checkpointing)
    labels0 = batch["labels"][:, 0]
    base = F.cross_entropy(
        out.token_logits.float().reshape(-1, out.token_logits.shape[-1]), labels0.reshape(-1), ignore_index=IGNORE
    )
    if out.codebook_labels.numel():
        sem = F.cross_entropy(
            out.codebook_logits.float().reshape(-1, out.codebook_logits.shape[-1]),
            out.codebook_labels.reshape(-1),
            ignore_index=IGNORE,
        )
        top5 = out.codebook_logits.topk(min(5, out.codebook_logits.shape[-1]), dim=-1).indices
        valid = out.codebook_labels != IGNORE
        hit = (top5 == out.codebook_labels[..., None]).any(-1) & valid
        acc = hit.sum().float() / valid.sum().clamp_min(1)
    else:  # a batch without audio frames (only possible with broken data): no codebook loss
        sem = out.codebook_logits.sum() * 0.0
        acc = torch.zeros((), device=base.device)
    pad = batch.get("key_padding_mask")
    tokens = int((~pad).sum()) if pad is not None else int(labels0.numel())
    return LossOut(base + sem, base.detach(), sem.detach(), acc.detach(), int(out.codebook_labels.shape[0]), tokens)
