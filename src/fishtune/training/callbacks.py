"""Callbacks: a metrics journal (``train/metrics.jsonl``) with readable progress lines and an ETA, feeding
``status.json`` too; a step progress bar with ETA on a terminal."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import lightning as L

from fishtune import status
from fishtune.progress import Progress, format_seconds
from fishtune.runstate import write_text_atomic

log = logging.getLogger("fishtune.train")


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


class MetricsJournal(L.Callback):
    """Appends one JSON line per logged training step and per validation; logs a progress line for each."""

    def __init__(self, path: Path, every: int, max_steps: int):
        self.path, self.every, self.max_steps = Path(path), max(1, every), max_steps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = None
        self._t0 = None
        self._step0 = 0
        self.best_val = math.inf

    def _write(self, row: dict) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed on teardown
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()

    def on_train_start(self, trainer, pl_module):
        self._t0, self._step0 = time.time(), trainer.global_step
        if trainer.global_step:
            log.info("resumed at step %d of %d", trainer.global_step, self.max_steps)
            self._drop_after(trainer.global_step)

    def _drop_after(self, step: int) -> None:
        """A killed run logged steps past its last checkpoint; they are done again, so their old lines go."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = []
        for line in lines:
            try:
                if json.loads(line).get("step", 0) > step:
                    continue
            except ValueError:  # a torn last line of the killed run
                continue
            keep.append(line)
        if len(keep) != len(lines):
            write_text_atomic(self.path, "".join(keep))

    def _eta(self, step: int) -> float:
        done = step - self._step0
        return (time.time() - self._t0) / done * (self.max_steps - step) if done > 0 and self._t0 else math.nan

    def _status(self, trainer, step: int, force: bool = False, **extra) -> None:
        m = trainer.callback_metrics
        fields: dict = {"step": step, "max_steps": self.max_steps, **extra}
        for key, name in (
            ("train/loss", "loss"),
            ("train/lr", "lr"),
            ("perf/tokens_per_second", "tokens_per_second"),
            ("perf/step_seconds", "step_seconds"),
            ("perf/gpu_memory_gb", "gpu_memory_gb"),
        ):
            if key in m:
                fields[name] = _num(m[key])
        eta = self._eta(step)
        fields["eta_seconds"] = None if math.isnan(eta) else round(eta, 1)
        if self.best_val < math.inf:
            fields["best_val_loss"] = self.best_val
        status.train(fields, force=force)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if status.due() or step == self.max_steps:
            self._status(trainer, step)
        if step % self.every and step != self.max_steps:
            return
        m = {k: _num(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "perf/"))}
        self._write({"step": step, "time": time.time(), **m})
        eta = self._eta(step)
        parts = [
            f"step {step}/{self.max_steps}",
            f"loss {m.get('train/loss', math.nan):.4f}",
            f"(token {m.get('train/base_loss', math.nan):.3f} + codebook {m.get('train/semantic_loss', math.nan):.3f})",
            f"top5 {m.get('train/top5_accuracy', math.nan):.3f}",
            f"lr {m.get('train/lr', math.nan):.2e}",
        ]
        if "perf/step_seconds" in m:
            parts.append(f"{m['perf/step_seconds']:.2f} s/step, {m.get('perf/tokens_per_second', 0):.0f} tok/s")
        if "perf/gpu_memory_gb" in m:
            parts.append(f"GPU {m['perf/gpu_memory_gb']:.1f} GiB")
        if not math.isnan(eta):
            parts.append(f"ETA {format_seconds(eta)}")
        log.info(", ".join(parts))

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        m = {k: _num(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not m:
            return
        self.best_val = min(self.best_val, m.get("val/loss", math.inf))
        self._write({"step": trainer.global_step, "time": time.time(), **m})
        log.info(
            "validation at step %d: val loss %.4f (token %.3f + codebook %.3f), top5 %.3f, best %.4f",
            trainer.global_step,
            m.get("val/loss", math.nan),
            m.get("val/base_loss", math.nan),
            m.get("val/semantic_loss", math.nan),
            m.get("val/top5_accuracy", math.nan),
            self.best_val,
        )
        self._status(trainer, trainer.global_step, force=True, val_loss=m.get("val/loss", math.nan))
        log.info("cost so far: %s", status.run_cost_text())

    def teardown(self, trainer, pl_module, stage):
        if self._fh:
            self._fh.close()
            self._fh = None


class StepProgress(L.Callback):
    """A tqdm bar over training steps with an ETA on a terminal (Lightning's bar has no total for a stream);
    on a pipe it only feeds ``status.json`` (MetricsJournal logs the step lines)."""

    def __init__(self, max_steps: int):
        self.max_steps = max_steps
        self.bar: Progress | None = None

    def on_train_start(self, trainer, pl_module):
        self.bar = Progress("train", self.max_steps, unit="steps", start=trainer.global_step, lines=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.bar is not None and trainer.global_step > self.bar.done:
            self.bar.update(trainer.global_step - self.bar.done)

    def teardown(self, trainer, pl_module, stage):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
