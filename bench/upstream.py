"""Upstream Fish Speech's S1 fine-tuning step, reproduced for the benchmark's baseline. Not a product path.

What upstream's trainer does (fish-speech at d3df505, ``datasets/semantic.py``, ``models/text2semantic/llama.py``
and ``lit_module.py``; see /work/shared/FACTS.md), and how this module reproduces it on fishtune's token layout:

- **data**: a sample is ``max_length // 20`` consecutive utterances of one speaker, all encoded and concatenated,
  then truncated at ``max_length``; the collator pads a batch to its longest row (:class:`ConcatStream`). The start
  is drawn like fishtune's stream (upstream draws starts that do not wrap around the speaker's list; the rows'
  shapes and cost are the same), so with a speaker longer than ``max_length`` its rows are exactly fishtune's
  ``fill`` rows: the two settings train on identical batches and their loss curves can be compared step by step;
- **attention**: an explicit causal + key-padding mask is always passed, so SDPA cannot use the flash kernel, and
  the fast transformer runs upstream's manual attention (``use_sdpa=False``, which is how the model is built);
- **checkpointing**: every slow and fast layer, reentrant (``use_reentrant=True``);
- **loss**: logits of the token head for every position (``[batch, length, vocab]``, in the weights' dtype) and of
  the codebook head for every audio frame, then cross-entropy with ``ignore_index``; top-5 accuracy of the codebook
  logits, as upstream logs it.

:func:`loss` takes each of these as an option, so the benchmark's ladder can drop them one at a time; with none of
them set, the product's :func:`fishtune.training.forward.loss` runs instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from fishtune.training import forward as fw
from fishtune.training.samples import PackedTrainStream, encode

UTTERANCE_TOKENS_GUESS = 20  # upstream samples max_length // 20 utterances ("each sample is at least 20 tokens")


class ConcatStream(PackedTrainStream):
    """Upstream's samples: ``max_length // 20`` consecutive utterances (fewer if the speaker has fewer), encoded
    whole and truncated at ``max_length``; batches padded to the longest row by the same collator."""

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        group, i = self.start(k)
        n = min(len(group), max(1, self.max_length // UTTERANCE_TOKENS_GUESS))
        inputs, labels = encode(self.tokenizer, self.nc, [group[(i + j) % len(group)] for j in range(n)])
        return inputs[:, : self.max_length], labels[:, : self.max_length]


def _run(layers, x, freqs, mask, checkpointed: int, reentrant: bool):
    for i, layer in enumerate(layers):
        ckpt = i < checkpointed
        x = checkpoint(layer, x, freqs, mask, use_reentrant=reentrant) if ckpt else layer(x, freqs, mask)
    return x


def hidden(model, batch: dict, mask_always: bool, ckpt) -> fw.Hidden:
    """:func:`fishtune.training.forward.hidden`, with upstream's options: ``mask_always`` passes the causal +
    padding mask even when no row is padded; ``ckpt="reentrant"`` checkpoints every layer, reentrant (otherwise
    as the product: the first ``ckpt`` units, fast layers first, non-reentrant)."""
    inputs, labels, pad = batch["inputs"], batch["labels"], batch.get("key_padding_mask")
    T = inputs.shape[-1]
    grad = model.training and torch.is_grad_enabled()
    reentrant = ckpt == "reentrant"
    n_ckpt = (fw.num_units(model) if reentrant else fw.checkpointed_units(model, ckpt)) if grad else 0
    n_fast = min(n_ckpt, len(model.fast_layers))
    x = fw.embed(model, inputs)
    padded = pad is not None and bool(pad.any())
    mask = model.causal_mask[None, None, :T, :T]
    if padded:
        mask = mask & ~pad[:, None, None, :]
    elif not mask_always and fw.flash_ok(model.layers, x):
        mask = None
    x = _run(model.layers, x, model.freqs_cis[:T], mask, n_ckpt - n_fast, reentrant)
    slow = model.norm(x)
    sel = fw.semantic_mask(model, labels[:, 0])
    cb_labels = labels[:, 1:].permute(0, 2, 1)[sel]
    h = model.fast_project_in(x[sel])
    fast_in = torch.cat([h[:, None], model.fast_embeddings(cb_labels[:, :-1].clamp_min(0))], dim=1)
    nc = model.config.num_codebooks
    fmask = (
        None if fw.flash_ok(model.fast_layers, fast_in) and not mask_always else model.causal_mask[None, None, :nc, :nc]
    )
    ffreqs = model.fast_freqs_cis[:nc]
    chunks = fast_in.split(fw.FAST_ROWS) if fast_in.shape[0] else ()
    fast = (
        torch.cat([_run(model.fast_layers, c, ffreqs, fmask, n_fast, reentrant) for c in chunks]) if chunks else fast_in
    )
    return fw.Hidden(slow, model.fast_norm(fast), cb_labels)


def full_logit_losses(model, h: fw.Hidden, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upstream's loss: the token head over every position, cross-entropy in the logits' dtype. -> (base, semantic,
    codebook top-5 accuracy)."""
    token_logits = fw.token_head(model, h.slow)
    base = F.cross_entropy(
        token_logits.reshape(-1, token_logits.shape[-1]), labels[:, 0].reshape(-1), ignore_index=fw.IGNORE
    )
    cb_logits = model.fast_output(h.fast)
    y = h.codebook_labels.reshape(-1)
    sem = F.cross_entropy(cb_logits.reshape(-1, cb_logits.shape[-1]), y, ignore_index=fw.IGNORE)
    with torch.no_grad():
        best = cb_logits.reshape(-1, cb_logits.shape[-1]).topk(min(5, cb_logits.shape[-1]), dim=-1).indices
        acc = ((best == y[:, None]).any(-1) & (y != fw.IGNORE)).sum() / (y != fw.IGNORE).sum().clamp_min(1)
    return base, sem, acc


def loss(model, batch: dict, opts: dict) -> fw.LossOut:
    """One step's loss for a benchmark setting: upstream's pieces where ``opts`` asks for them (``mask: always``,
    ``gradient_checkpointing: reentrant``, ``full_logits``), the product's forward otherwise."""
    mask_always, ckpt, full = opts["mask"] == "always", opts["gradient_checkpointing"], opts["full_logits"]
    if not (mask_always or ckpt == "reentrant" or full):
        return fw.loss(model, batch, ckpt, opts["ce_chunk"])
    h = hidden(model, batch, mask_always, ckpt)
    labels = batch["labels"]
    if full:
        base, sem, acc = full_logit_losses(model, h, labels)
    else:
        chunk, rec = opts["ce_chunk"], opts["ce_chunk"] > 0
        flat = h.slow.reshape(-1, h.slow.shape[-1])
        b_sum, _, b_n = fw.cross_entropy(
            lambda x: fw.token_head(model, x), flat, labels[:, 0].reshape(-1), chunk, rec, False
        )
        c_sum, hits, c_n = fw.cross_entropy(
            model.fast_output, h.fast.reshape(-1, h.fast.shape[-1]), h.codebook_labels.reshape(-1), chunk, rec
        )
        base, sem, acc = b_sum / b_n.clamp_min(1), c_sum / c_n.clamp_min(1), hits.float() / c_n.clamp_min(1)
    pad = batch.get("key_padding_mask")
    tokens = int((~pad).sum()) if pad is not None else int(labels[:, 0].numel())
    n = int(h.codebook_labels.shape[0])
    return fw.LossOut(base + sem, base.detach(), sem.detach(), acc.detach(), n, tokens)
