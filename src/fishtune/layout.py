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
    doctor.json  state.json  status.json  summary.json  summary.txt  .fishtune.lock
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _select(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part, None) if node is not None else None
    return node


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run. Attributes are folders or files; methods take a name (a stage, a shard)."""

    root: Path
    model: Path
    samples: Path
    report: Path
    raw: Path

    @classmethod
    def of(cls, cfg: Any) -> "RunLayout":
        """The layout for ``cfg`` (a DictConfig or anything with the same attributes)."""
        root = Path(str(cfg.run_dir))

        def configured(dotted: str, default: str) -> Path:
            value = _select(cfg, dotted)
            return Path(str(value)) if value else root / default

        return cls(
            root=root,
            model=configured("merge.output", "model"),
            samples=configured("synthesize.output", "samples"),
            report=configured("evaluate.output", "report"),
            raw=configured("fetch.dataset.dest", "raw"),
        )

    @classmethod
    def at(cls, run_dir: str | Path) -> "RunLayout":
        """The default layout under ``run_dir`` (for tools that have a folder but no config)."""
        root = Path(run_dir)
        return cls(root=root, model=root / "model", samples=root / "samples", report=root / "report", raw=root / "raw")

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
        return self.train / "checkpoints"

    @property
    def lora(self) -> Path:
        return self.train / "lora.pth"

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
    def lock(self) -> Path:
        return self.root / ".fishtune.lock"

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the run folder when it lies inside it, else as given (for summary lines)."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)
