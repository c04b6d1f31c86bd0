"""The LightningDataModule of a training run: the packed training stream and the held-out set, both per rank.

- Training: :class:`~fishtune.training.samples.PackedTrainStream` for this rank of the world, starting at the
  global batch ``global_step * accumulate`` (restored from a checkpoint by the time Lightning asks), so a resumed
  run sees what an uninterrupted one would. The position counts global batches of the checkpoint's world size, so
  a checkpoint is resumed only by as many processes as wrote it (the module refuses any other number).
- Validation: rank ``r`` of ``W`` takes held-out items ``r, r+W, …`` (no padding with repeats, unlike a
  DistributedSampler; see :func:`shard`); the module sums losses weighted by batch size and all-reduces them
  (:meth:`~fishtune.training.module.LoraModule.on_validation_epoch_end`).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader, Dataset, Subset

from fishtune.training.samples import PackedTrainStream


def shard(dataset: Dataset, rank: int, world: int) -> Dataset:
    """Items ``rank, rank + world, …`` of ``dataset`` (every item on exactly one rank). With fewer items than
    ranks every rank takes them all: each then validates the same set, and the all-reduced mean is unchanged."""
    if world == 1 or len(dataset) < world:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world))


class PackedData(L.LightningDataModule):
    def __init__(
        self,
        make_stream: Callable[..., PackedTrainStream],
        val_set: Dataset,
        collate: Callable,
        val_batch_size: int,
        accumulate: int,
        workers: int,
        pin_memory: bool = False,
        groups: list | None = None,
        val_items: int = 0,
    ):
        """``make_stream(start_batch, rank=, world=)`` builds the training stream; ``groups`` (the packed
        utterances per speaker) are kept for the log; ``val_items`` > 0 validates on the first that many held-out
        items only (``train.val_batches`` x ``val_batch_size``), cut before the ranks share them out, so the
        held-out loss is the same set's whatever the number of ranks."""
        super().__init__()
        self.groups = groups or []
        self.make_stream, self.val_set, self.collate = make_stream, val_set, collate
        self.val_batch_size, self.accumulate = val_batch_size, accumulate
        self.workers, self.pin_memory, self.val_items = workers, pin_memory, val_items

    def _loader(self, dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, num_workers=self.workers, persistent_workers=self.workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        stream = self.make_stream(t.global_step * self.accumulate, rank=t.global_rank, world=t.world_size)
        return self._loader(stream, batch_size=None, pin_memory=self.pin_memory)

    def val_dataloader(self) -> DataLoader:
        t = self.trainer
        items = self.val_set
        if 0 < self.val_items < len(items):
            items = Subset(items, range(self.val_items))
        part = shard(items, t.global_rank, t.world_size)
        return self._loader(part, batch_size=self.val_batch_size, collate_fn=self.collate)
