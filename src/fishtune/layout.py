"""The run folder: every path a run reads or writes, in one place.

A :class:`RunLayout` is built from the config (``RunLayout.of(cfg)``) so that the configurable outputs
(``merge.output``, ``synthesize.output``, ``evaluate.output``, ``fetch.dataset.dest``) are honoured; no other
module joins run-folder names. The default shape of ``<run_dir>``::

    raw/                      a downloaded or extracted dataset (fetch.dataset.dest)
    clips/                    prepare: mono wavs + .lab, manifest.jsonl, rejected.jsonl, stats.json
    tokens/                   extract: <clip id>.npy VQ codes, summary.json
    packed/                   pack: train/ and val/ protobuf shards, split.json, summary.json
    train/                    train: lora.pth, checkpoints/, metrics.jsonl, summary.json, baseline.json, tensorboard/
    model/                    merge: the standalone merged model (merge.output)
    samples/                  synthesize: wavs + index.jsonl (synthesize.output)
    report/                   evaluate: index.html, report.json, best_checkpoint.json (evaluate.output)
    publish/                  publish: the staged upload
    logs/                     one <stage>.log per stage
    doctor.json  state.json  status.json  summary.json  summary.txt  serve.json  .fishtune.lock
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run. Attributes are folders or files; methods take a name (a stage, a shard)."""

    root: Path
    model: Path
    samples: Path
    report: Path
    raw: Path

    @classmethod
    def of(cls, cfg: Any) -> RunLayout:
        """The layout for ``cfg`` (a DictConfig or anything with the same attributes)."""
        return cls(
            root=Path(str(cfg.run_dir)),
            model=Path(str(cfg.merge.output)),
            samples=Path(str(cfg.synthesize.output)),
            report=Path(str(cfg.evaluate.output)),
            raw=Path(str(cfg.fetch.dataset.dest)),
        )

    @classmethod
    def at(cls, run_dir: str | Path) -> RunLayout:
        """The default layout under ``run_dir`` (for tools that have a folder but no config)."""
        root = Path(run_dir)
        return cls(root=root, model=root / "model", samples=root / "samples", report=root / "report", raw=root / "raw")

    @classmethod
    def coerce(cls, run: RunLayout | str | Path) -> RunLayout:
        """``run`` itself when it is a layout, else the default layout under that folder."""
        return run if isinstance(run, RunLayout) else cls.at(run)

    # prepare
    @property
    def clips(self) -> Path:
        return self.root / "clips"

    @property
    def manifest(self) -> Path:
        return self.clips / "manifest.jsonl"

    @property
    def rejected(self) -> Path:
        return self.clips / "rejected.jsonl"

    @property
    def stats(self) -> Path:
        return self.clips / "stats.json"

    @property
    def prepare_journal(self) -> Path:
        """Finished inputs of prepare, for resuming."""
        return self.clips / ".journal.jsonl"

    @property
    def prepare_failed(self) -> Path:
        """The rejections of a failed prepare (``clips/`` keeps the last good run's)."""
        return self.logs / "prepare.rejected.jsonl"

    # extract
    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def tokens_summary(self) -> Path:
        return self.tokens / "summary.json"

    # pack
    @property
    def packed(self) -> Path:
        return self.root / "packed"

    def shards(self, split: str) -> Path:
        """``packed/train`` or ``packed/val``."""
        return self.packed / split

    @property
    def split(self) -> Path:
        return self.packed / "split.json"

    @property
    def packed_summary(self) -> Path:
        return self.packed / "summary.json"

    # train
    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def checkpoints(self) -> Path:
        return self.checkpoints_in(self.train)

    @property
    def lora(self) -> Path:
        return self.lora_in(self.train)

    @staticmethod
    def checkpoints_in(train_dir: Path) -> Path:
        """The checkpoint folder of a ``train/`` folder given on its own (e.g. by a user, outside any run)."""
        return Path(train_dir) / "checkpoints"

    @staticmethod
    def lora_in(train_dir: Path) -> Path:
        """The final adapter of a ``train/`` folder given on its own."""
        return Path(train_dir) / "lora.pth"

    @property
    def best(self) -> Path:
        """The adapter with the lowest held-out validation loss."""
        return self.train / "best.ckpt"

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:09d}.ckpt"

    @property
    def metrics(self) -> Path:
        return self.train / "metrics.jsonl"

    @property
    def train_summary(self) -> Path:
        return self.train / "summary.json"

    @property
    def baseline(self) -> Path:
        return self.train / "baseline.json"

    @property
    def tensorboard(self) -> Path:
        return self.train / "tensorboard"

    # merge / evaluate / publish
    @property
    def merged_model(self) -> Path:
        return self.model / "model.pth"

    @property
    def merge_record(self) -> Path:
        """What merge made the model from (checkpoint, LoRA settings, validation)."""
        return self.model / "state.json"

    @property
    def samples_index(self) -> Path:
        return self.samples / "index.jsonl"

    @property
    def report_html(self) -> Path:
        return self.report / "index.html"

    @property
    def report_json(self) -> Path:
        return self.report / "report.json"

    @property
    def best_checkpoint(self) -> Path:
        return self.report / "best_checkpoint.json"

    @property
    def publish(self) -> Path:
        return self.root / "publish"

    # run-wide files
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, stage: str) -> Path:
        return self.logs / f"{stage}.log"

    @property
    def doctor(self) -> Path:
        return self.root / "doctor.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_text(self) -> Path:
        return self.root / "summary.txt"

    @property
    def serve_info(self) -> Path:
        """Where a running ``serve`` listens (for scripts and tests)."""
        return self.root / "serve.json"

    @property
    def write_probe(self) -> Path:
        """doctor's scratch file: can the run folder be written?"""
        return self.root / ".doctor-write-test"

    @property
    def lock(self) -> Path:
        return self.root / ".fishtune.lock"

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the run folder when it lies inside it, else as given (for summary lines)."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)
