"""Gradient checkpointing only where memory needs it.

Checkpointing a layer saves its activations and costs one more forward pass of it in the backward pass (about a
third more compute for that layer). ``train.gradient_checkpointing: auto`` therefore picks the fewest
checkpointed layers with which a training step of the real batch shape fits the GPU: it runs probe steps
(forward + backward of a training batch, no optimizer step, random state untouched) and binary-searches
the number of checkpointed units (fast layers first, then slow layers; see :func:`forward.checkpointed_units`).
Peak memory grows monotonically as fewer layers are checkpointed, so the search needs about log2(32) = 5 probes
at most, and one when everything fits (the usual case on an 80 GB GPU).

The probe batch is the one with the most audio frames among the first few (the fast transformer's activations
grow with them); batches of many packed utterances vary little around it, and ``train.memory_fraction`` (0.9)
leaves the rest as margin. On the CPU no probe is run: nothing is checkpointed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch

from fishtune.errors import StageFailed
from fishtune.training import forward as fw

log = logging.getLogger("fishtune.train")


def parse(value) -> bool | int | str:
    """``auto`` | ``true`` | ``false`` | a number of units -> ``"auto"``, bool or int; anything else is an error."""
    if isinstance(value, bool) or value == "auto":
        return value
    if isinstance(value, int) and value >= 0:
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    if text.isdigit():
        return int(text)
    raise ValueError(f"train.gradient_checkpointing must be auto, true, false or a layer count, not {value!r}")


def smallest_fitting(n_max: int, fits: Callable[[int], bool]) -> int | None:
    """The smallest ``n`` in ``[0, n_max]`` with ``fits(n)``, given that ``fits`` is monotonic (False ... True);
    None when even ``n_max`` does not fit. Calls ``fits`` at most ``2 + ceil(log2(n_max))`` times."""
    if fits(0):
        return 0
    if not fits(n_max):
        return None
    lo, hi = 0, n_max  # fits(lo) is False, fits(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


class CudaProbe:
    """``fits(n)``: does a forward + backward of ``batch`` with ``n`` checkpointed units peak under the budget?"""

    def __init__(self, model, batch: dict, ce_chunk: int, budget_bytes: int, device, forward_context=None):
        self.model, self.batch, self.ce_chunk = model, batch, ce_chunk
        self.budget, self.device = budget_bytes, device
        self.context = forward_context or contextlib.nullcontext
        self.peaks: dict[int, float | None] = {}  # GiB; None: out of memory

    def __call__(self, n: int) -> bool:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        peak = None
        try:
            with torch.random.fork_rng(devices=[self.device]), self.context():
                out = fw.loss(self.model, self.batch, n, self.ce_chunk)
                out.loss.backward()
            peak = torch.cuda.max_memory_allocated(self.device)
        except torch.OutOfMemoryError:
            pass
        finally:
            out = None
            self.model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        self.peaks[n] = None if peak is None else round(peak / 2**30, 2)
        ok = peak is not None and peak <= self.budget
        log.info(
            "memory probe: %d of %d layers checkpointed -> %s",
            n,
            fw.num_units(self.model),
            "out of memory" if peak is None else f"peak {peak / 2**30:.1f} GiB ({'fits' if ok else 'over budget'})",
        )
        return ok


def budget_bytes(device, fraction: float, limit_gb: float | None) -> tuple[int, str]:
    """``fraction`` of the GPU's memory, capped at ``limit_gb`` (e.g. to plan for a 24 GB card on a larger one)."""
    total = torch.cuda.get_device_properties(device).total_memory
    budget, what = int(fraction * total), f"{fraction:.0%} of the GPU's {total / 2**30:.0f} GiB"
    if limit_gb and limit_gb * 2**30 < budget:
        budget, what = int(limit_gb * 2**30), f"the {limit_gb:g} GiB limit (train.memory_limit_gb)"
    return budget, what


def plan(
    model,
    make_batch: Callable[[], dict],
    ce_chunk: int,
    device,
    fraction: float,
    limit_gb: float | None = None,
    forward_context=None,
) -> dict:
    """Choose how many units to checkpoint for ``auto``. Returns ``{"checkpointed": n, ...}`` for the summary.
    ``make_batch`` is only called on a GPU (the CPU plan needs no probe batch)."""
    units = fw.num_units(model)
    if device.type != "cuda":
        return {"checkpointed": 0, "units": units, "reason": "cpu"}
    batch = {k: v.to(device) for k, v in make_batch().items()}
    budget, what = budget_bytes(device, fraction, limit_gb)
    probe = CudaProbe(model, batch, ce_chunk, budget, device, forward_context)
    n = smallest_fitting(units, probe)
    if n is None:
        shape = tuple(batch["inputs"].shape)
        raise StageFailed(
            f"a training step of batch {shape[0]} x {shape[-1]} tokens does not fit in {what} even with every "
            "layer checkpointed",
            hint="lower train.batch_size (and raise train.accumulate to keep the effective batch) or train.max_length,"
            " or use preset=24gb",
        )
    return {
        "checkpointed": n,
        "units": units,
        "reason": f"the fewest that fit {what}",
        "probe_peaks_gib": probe.peaks,
    }


def probe_batch(model, stream, candidates: int = 8) -> dict:
    """The batch for the memory plan: of the first ``candidates`` batches (full rows when packing fills them), the
    one with the most audio frames, since the fast transformer's memory grows with them."""
    batches = [stream.batch(b) for b in range(candidates)]
    return max(batches, key=lambda b: int(fw.semantic_mask(model, b["labels"][:, 0]).sum()))
