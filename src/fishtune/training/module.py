"""The LightningModule: LoRA training of the dual-AR model with upstream's loss, AdamW and warm-up."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import lightning as L
import torch

from fishtune import lora
from fishtune.errors import UsageError
from fishtune.evaluation import loss as heldout
from fishtune.training import forward as fw
from fishtune.training import memory

log = logging.getLogger("fishtune.train")


def lr_lambda(warmup: int, total: int, schedule: str):
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return f


class LoraModule(L.LightningModule):
    def __init__(
        self,
        model,
        opt: dict,
        gradient_checkpointing: bool | int | str = False,
        ce_chunk: int = 0,
        memory_fraction: float = 0.9,
        memory_limit_gb: float | None = None,
        probe_batch: Callable[[], dict] | None = None,
        adapter_record: dict | None = None,
    ):
        """``gradient_checkpointing="auto"``: at the start of fit, probe steps on ``probe_batch()`` pick the fewest
        checkpointed layers that fit ``memory_fraction`` of the GPU, at most ``memory_limit_gb``
        (:mod:`fishtune.training.memory`)."""
        super().__init__()
        self.model = model
        self.opt = opt
        self.gradient_checkpointing = memory.parse(gradient_checkpointing)
        if self.gradient_checkpointing == "auto" and probe_batch is None:
            raise ValueError("gradient_checkpointing='auto' needs probe_batch")
        self.ce_chunk = ce_chunk
        self.memory_fraction, self.memory_limit_gb = memory_fraction, memory_limit_gb
        self.probe_batch = probe_batch
        self.adapter_record = adapter_record or {}  # fishtune.adapters.record(): saved in every checkpoint
        self.memory_plan: dict | None = None
        self.strict_loading = False  # checkpoints hold LoRA weights only; on_load_checkpoint checks them
        self._t_last = None

    def on_fit_start(self):
        if self.gradient_checkpointing != "auto":
            n = fw.checkpointed_units(self.model, self.gradient_checkpointing)
            self.memory_plan = {"checkpointed": n, "units": fw.num_units(self.model), "reason": "configured"}
        else:
            self.memory_plan = memory.plan(
                self.model,
                self.probe_batch,
                self.ce_chunk,
                self.device,
                self.memory_fraction,
                self.memory_limit_gb,
                self.trainer.precision_plugin.forward_context,
            )
            # every rank checkpoints the same layers: the most any rank needs
            mine = torch.tensor(self.memory_plan["checkpointed"], device=self.device)
            agreed = int(self._across_ranks(mine, "max"))
            if agreed != self.memory_plan["checkpointed"]:
                self.memory_plan |= {"checkpointed": agreed, "reason": "the most any rank needs"}
            self.gradient_checkpointing = agreed
        log.info(
            "gradient checkpointing: %d of %d layers (%s)",
            self.memory_plan["checkpointed"],
            self.memory_plan["units"],
            self.memory_plan["reason"],
        )

    def forward(self, batch):
        return fw.loss(self.model, batch, self.gradient_checkpointing, self.ce_chunk)

    def _seed_step(self) -> None:
        """LoRA dropout's random numbers are a pure function of (train.seed, step, micro-batch), like the data
        stream: a run resumed after a kill draws exactly what the uninterrupted run drew (data loaders and
        validations elsewhere draw from the global generator at moments that differ between the two)."""
        step = self.global_step
        self._micro = self._micro + 1 if getattr(self, "_micro_step", None) == step else 0
        self._micro_step = step
        torch.manual_seed((int(self.opt.get("seed", 0)) * 1_000_003 + step) * 64 + self._micro)

    def _across_ranks(self, values: torch.Tensor, op: str) -> torch.Tensor:
        """``values`` reduced over every rank (``op``: ``sum`` | ``mean``); itself on one device."""
        if self.trainer.world_size == 1:
            return values
        return self.trainer.strategy.reduce(values, reduce_op=op)

    def training_step(self, batch, batch_idx):
        self.model.train()
        self._seed_step()
        out = self(batch)
        now = time.perf_counter()
        bs = batch["inputs"].shape[0]
        # the step's figures over every rank (one all-reduce): the loss of the global batch, its tokens
        parts = (out.loss.detach(), out.base_loss, out.semantic_loss, out.top5_accuracy, out.tokens)
        mean = self._across_ranks(torch.stack([torch.as_tensor(v, device=self.device).float() for v in parts]), "mean")
        keys = ("train/loss", "train/base_loss", "train/semantic_loss", "train/top5_accuracy")
        logs = dict(zip(keys, mean[:4], strict=True))
        tokens = float(mean[4]) * self.trainer.world_size  # every rank's tokens (padding differs between ranks)
        logs["train/tokens"] = tokens
        if self._t_last is not None:
            dt = now - self._t_last
            logs["perf/step_seconds"] = dt
            logs["perf/tokens_per_second"] = tokens / dt if dt > 0 else 0.0  # every rank's tokens
        if torch.cuda.is_available():
            logs["perf/gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        self._t_last = now
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=bs)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, batch_size=bs)
        return out.loss

    VAL_KEYS = ("val_loss", "val_base_loss", "val_semantic_loss", "val_top5_accuracy")  # logged as val/<part>

    def validation_step(self, batch, batch_idx):
        self._val_sums = self._val_sums + heldout.batch_sums(self(batch), int(batch["inputs"].shape[0]), self.VAL_KEYS)

    def on_validation_epoch_start(self):
        self._t_last = None  # validation time is not a training step
        self._val_sums = torch.zeros(len(self.VAL_KEYS) + 1, dtype=torch.float64, device=self.device)

    def on_validation_epoch_end(self):
        """Held-out figures: means over every held-out sample (fishtune.evaluation.loss), summed over the ranks."""
        means = heldout.means(self._across_ranks(self._val_sums, "sum"), self.VAL_KEYS)
        if means:
            logged = {k.replace("val_", "val/", 1): v for k, v in means.items()}
            # already the same on every rank; sync_dist's mean of equal values keeps Lightning from warning
            self.log_dict(logged, on_step=False, on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if ("embeddings" in name or name.endswith("bias") or "norm" in name) else decay).append(p)
        o = self.opt
        fused = torch.cuda.is_available() and all(p.is_cuda for p in decay + no_decay)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o["lr"],
            betas=tuple(o["betas"]),
            eps=o["eps"],
            fused=fused or None,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(o["warmup_steps"], o["max_steps"], o["scheduler"])
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if "lora_" in k}
        checkpoint["fishtune"] = self.adapter_record  # how to use this adapter, and on which base
        checkpoint["fishtune_world_size"] = self.trainer.world_size  # the data position depends on it

    def on_load_checkpoint(self, checkpoint):
        saved, now = checkpoint.get("fishtune_world_size"), self.trainer.world_size
        if saved is not None and int(saved) != now:  # every rank reads the same file: they all stop here
            raise UsageError(
                f"the checkpoint to resume was trained by {saved} process(es), this run has {now}: the data stream "
                "position (global batch x processes x batch size) would skip or repeat samples",
                hint=f"resume with {saved} process(es) (train.devices / torchrun --nproc-per-node), or start a new "
                "run (RUN_NAME=<new>) with train.init_lora=<this run's train folder>",
            )
        lora.load_lora_state_dict(self.model, checkpoint["state_dict"], source="the resumed checkpoint")
