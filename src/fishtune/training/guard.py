"""The untrained-base guard: before the first step, the base model's held-out loss is compared with the loss of
uniform guessing. A base that scores near uniform was not loaded (the upstream bug that re-created layers after
loading the weights trained LoRA on a random base: loss "23 -> 13"); it fails the stage unless allowed."""

from __future__ import annotations

import logging
import math

import torch

from fishtune.errors import StageFailed
from fishtune.evaluation.loss import heldout_loss

log = logging.getLogger("fishtune.train")


def check_val_set(val_set, max_length: int) -> None:
    """Held-out clips longer than a row are left out of validation, loudly; none left is an error (an empty
    validation would read 0.0000 and silently switch off early stopping and the untrained-base guard)."""
    if val_set.left_out:
        log.warning(
            "%d held-out clip(s) longer than train.max_length=%d tokens are left out of validation (e.g. %r)",
            len(val_set.left_out),
            max_length,
            val_set.left_out[0].text[:60],
        )
    if len(val_set) == 0:
        raise StageFailed(
            f"no held-out clip fits train.max_length={max_length} tokens: validation would measure nothing",
            hint="raise train.max_length, or lower prepare.max_duration and rerun prepare, extract and pack",
        )


def base_loss(
    model, val_loader, device, precision: str, batches: int, max_ratio: float, enabled: bool, allow: bool, where: str
) -> dict:
    """Measure the base's held-out loss over ``batches`` batches (0: all); raise :class:`StageFailed` when it is
    above ``max_ratio`` of uniform guessing (only a warning with ``allow``). Returns the figures for
    ``baseline.json``."""
    c = model.config
    uniform = math.log(c.vocab_size) + math.log(c.codebook_size)
    model.to(device)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    # the held-out set is never empty here (check_val_set refuses that); the model stays on the device
    loss = heldout_loss(model, val_loader, device, dtype, batches)["val_loss"]
    ratio = loss / uniform
    info = {"base_val_loss": round(loss, 4), "uniform_loss": round(uniform, 4), "ratio": round(ratio, 3)}
    log.info("base model validation loss %.4f; uniform guessing would give %.4f (ratio %.2f)", loss, uniform, ratio)
    if enabled and ratio > max_ratio:
        if allow:
            log.warning("the base model looks untrained (ratio %.2f > %.2f); allowed for %s", ratio, max_ratio, where)
        else:
            raise StageFailed(
                f"the base model {where} looks untrained: validation loss {loss:.2f} is {ratio:.0%} of "
                f"uniform guessing ({uniform:.2f}); fine-tuning it would train adapters on a random base",
                hint="check that model.pth is the real pretrained checkpoint (doctor prints its sha256)",
            )
    return info
