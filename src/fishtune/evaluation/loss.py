"""The loss on the held-out split (``packed/val``): one definition for every place that reports it.

:func:`heldout_loss` is the mean over held-out *samples* (each batch weighted by its size), of the total loss and
its two parts. The evaluate stage uses it per system; training's validation (the base-model guard and the
``val/loss`` it early-stops on) must use it too, so that "validation loss" means the same number everywhere (a
mean of batch means weighs a short last batch like a full one).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

KEYS = ("val_loss", "val_base_loss", "val_semantic_loss")


def heldout_set(val_dir: Path, model, max_length: int):
    """The held-out shards in ``val_dir`` as training validates on them (a ``ValSet``), or None without any."""
    from fishtune.training.samples import ValSet, load_groups

    if not any(Path(val_dir).glob("*.protos")):
        return None
    nc = model.config.num_codebooks
    return ValSet(load_groups(val_dir, nc), model.tokenizer, nc, min(int(max_length), int(model.config.max_seq_len)))


def heldout_batches(dataset, model, batch_size: int):
    """Batches of ``dataset`` (from :func:`heldout_set`), collated as in training."""
    from torch.utils.data import DataLoader

    from fishtune.training.samples import Collate

    pad = model.tokenizer.get_token_id("<|end_of_text|>")
    return DataLoader(dataset, batch_size=int(batch_size), collate_fn=Collate(pad))


@torch.no_grad()
def heldout_loss(model, batches: Iterable[dict], device, dtype, max_batches: int = 0) -> dict | None:
    """``{"val_loss", "val_base_loss", "val_semantic_loss", "samples", "batches"}``: the batch-size-weighted mean
    loss of ``model`` over ``batches`` (at most ``max_batches``; 0: all), or None when there is no batch.

    ``model`` is put in eval mode; each batch is moved to ``device`` and run under autocast to ``dtype`` (none for
    float32).
    """
    from fishtune.training import forward as fw

    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    samples = count = 0
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        size = int(batch["inputs"].shape[0])
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = fw.loss(model, batch)
        totals += size * torch.tensor([float(out.loss), float(out.base_loss), float(out.semantic_loss)])
        samples += size
        count += 1
    if not samples:
        return None
    means = (totals / samples).tolist()
    return {**dict(zip(KEYS, means, strict=True)), "samples": samples, "batches": count}
