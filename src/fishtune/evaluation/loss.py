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


def batch_sums(out, size: int, keys: tuple[str, ...] = KEYS) -> torch.Tensor:
    """One batch's contribution: each loss part times the batch size, then the batch size (float64, on the
    loss's device). Sum these over batches (and ranks) and pass the total to :func:`means`."""
    names = {"val_loss": "loss", "val_base_loss": "base_loss", "val_semantic_loss": "semantic_loss"}
    parts = [torch.as_tensor(getattr(out, names.get(k, k.removeprefix("val_")))).double().reshape(()) for k in keys]
    return torch.stack([*(p * size for p in parts), torch.full_like(parts[0], float(size))])


def means(sums: torch.Tensor, keys: tuple[str, ...] = KEYS) -> dict | None:
    """The per-sample means from summed :func:`batch_sums` (None when no sample was seen)."""
    samples = float(sums[-1])
    if not samples:
        return None
    return dict(zip(keys, (sums[:-1] / samples).tolist(), strict=True))


@torch.no_grad()
def heldout_loss(model, batches: Iterable[dict], device, dtype, max_batches: int = 0) -> dict | None:
    """``{"val_loss", "val_base_loss", "val_semantic_loss", "samples", "batches"}``: the batch-size-weighted mean
    loss of ``model`` over ``batches`` (at most ``max_batches``; 0: all), or None when there is no batch.

    ``model`` is put in eval mode; each batch is moved to ``device`` and run under autocast to ``dtype`` (none for
    float32). Training's own validation step sums the same :func:`batch_sums` across ranks.
    """
    from fishtune.training import forward as fw

    model.eval()
    totals, count = None, 0
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = fw.loss(model, batch)
        part = batch_sums(out, int(batch["inputs"].shape[0])).cpu()
        totals = part if totals is None else totals + part
        count += 1
    result = means(totals) if totals is not None else None
    return None if result is None else {**result, "samples": int(totals[-1]), "batches": count}
