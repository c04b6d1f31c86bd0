"""Stage ``pack``: clips' text + VQ tokens -> Fish Speech's protobuf training data, with a held-out split.

Outputs (under ``<run_dir>/packed``):
- ``train/00000000.protos`` ... and ``val/00000000.protos``: one ``TextData`` record per speaker per shard
- ``split.json``: which clip ids went to train and to val, and how the split was made
- ``summary.json``: counts, frames and hours per split

The validation clips never appear in training data (upstream's recipe validated on the training set, which
makes early stopping meaningless). The split is a function of clip ids and the seed only: adding clips later
keeps earlier clips on their side unless the held-out count changes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from fishtune import packed, tokens
from fishtune.errors import InputError, StageFailed, UsageError
from fishtune.layout import RunLayout
from fishtune.manifest import read_manifest
from fishtune.progress import Progress
from fishtune.proto import text_data_pb2 as pb
from fishtune.results import StageResult
from fishtune.runstate import RunState, remove_temp_files, sha256_json, write_json_atomic

log = logging.getLogger("fishtune.pack")

SHARD_BYTES = 10 * 1024 * 1024


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split(rows: list[dict], fraction: float, vmin: int, vmax: int, by: str, seed: int) -> tuple[set, set]:
    """Return (train ids, val ids). ``by`` is ``clip`` or ``speaker``."""
    ids = sorted(r["id"] for r in rows)
    if len(ids) < 2:
        raise StageFailed(
            f"only {len(ids)} usable clip(s): need at least 2 to hold one out for validation",
            hint="add more clips",
        )
    if by == "clip":
        k = min(max(round(fraction * len(ids)), vmin), vmax, len(ids) - 1)
        val = set(sorted(ids, key=lambda i: _rank(seed, i))[:k])
    elif by == "speaker":
        speakers = sorted({r["speaker"] for r in rows})
        if len(speakers) < 2:
            raise UsageError("pack.split_by=speaker needs at least 2 speakers", hint="use pack.split_by=clip")
        k = min(max(round(fraction * len(speakers)), 1), len(speakers) - 1)
        held = set(sorted(speakers, key=lambda s: _rank(seed, s))[:k])
        val = {r["id"] for r in rows if r["speaker"] in held}
    else:  # clip | speaker: fishtune.schema
        raise AssertionError(by)
    return set(ids) - val, val


def _shards(records: list[pb.TextData]) -> list[list[pb.TextData]]:
    shards: list[list[pb.TextData]] = [[]]
    size = 0
    for rec in records:
        n = rec.ByteSize()
        if shards[-1] and size + n > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(rec)
        size += n
    return shards


def _write_split(folder: Path, rows: list[dict], tokens_dir: Path, progress: Progress | None = None) -> dict:
    by_speaker: dict[str, list[pb.Sentence]] = {}
    frames = 0
    codebooks: set[int] = set()
    for row in sorted(rows, key=lambda r: r["id"]):
        codes = tokens.load(tokens.paths(tokens_dir, row["id"])[0])
        if progress is not None:
            progress.update(1, amount=row["duration"])
        codebooks.add(codes.shape[0])
        frames += codes.shape[1]
        by_speaker.setdefault(row["speaker"], []).append(packed.make_sentence(row["text"], codes))
    if len(codebooks) > 1:
        raise InputError(
            f"token files in {tokens_dir} have different codebook counts {sorted(codebooks)}",
            hint="delete tokens/ and rerun extract",
        )
    records = [pb.TextData(source="fishtune", name=spk, sentences=s) for spk, s in sorted(by_speaker.items())]
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, shard in enumerate(_shards(records)):
        name = f"{i:08d}.protos"
        packed.write(folder / name, shard)
        names.append(name)
    for stale in folder.glob("*.protos"):
        if stale.name not in names:
            stale.unlink()
    return {
        "clips": len(rows),
        "speakers": len(records),
        "frames": frames,
        "hours": round(sum(r["duration"] for r in rows) / 3600, 6),
        "shards": names,
        "num_codebooks": next(iter(codebooks), 0),
    }


def _settings(cfg: DictConfig) -> dict:
    p = cfg.pack
    return {
        "val_fraction": float(p.val_fraction),
        "val_min": int(p.val_min),
        "val_max": int(p.val_max),
        "split_by": str(p.split_by),
        "seed": int(p.seed),
    }


def _line(run: RunLayout, train_clips: int, val_clips: int, unchanged: bool = False) -> str:
    note = "; unchanged" if unchanged else ""
    return f"{run.relative(run.packed)}/ ({train_clips} train + {val_clips} held-out clips{note})"


def run(cfg: DictConfig) -> StageResult:
    started = time.time()
    run_layout = RunLayout.of(cfg)
    rows = read_manifest(run_layout.manifest)
    tokens_dir = run_layout.tokens
    out = run_layout.packed
    remove_temp_files(out, subfolders=True)  # half-written files of a killed run
    missing = [r["id"] for r in rows if not tokens.paths(tokens_dir, r["id"])[0].is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} clips have no token file (e.g. {tokens_dir / missing[0]}.npy)",
            hint="run the extract stage first (STAGE=extract)",
        )
    settings = _settings(cfg)
    fingerprint = sha256_json(
        [
            settings,
            [(r["id"], r["text"], tokens.paths(tokens_dir, r["id"])[1].read_text()) for r in rows],
        ]
    )
    state = RunState(run_layout)
    if (
        state.is_current("pack", fingerprint)
        and run_layout.packed_summary.is_file()
        and all(
            (run_layout.shards(s) / n).is_file()
            for s in ("train", "val")
            for n in state.stage("pack").get("shards", {}).get(s, [])
        )
    ):
        log.info("pack: up to date (inputs unchanged), nothing to do")
        rec = state.stage("pack")
        return StageResult(_line(run_layout, rec["train_clips"], rec["val_clips"], unchanged=True), True, rec)

    train_ids, val_ids = split(
        rows,
        settings["val_fraction"],
        settings["val_min"],
        settings["val_max"],
        settings["split_by"],
        settings["seed"],
    )
    progress = Progress("pack", len(rows), unit="clips", amount_unit="audio s", logger=log)
    summary = {
        "train": _write_split(
            run_layout.shards("train"), [r for r in rows if r["id"] in train_ids], tokens_dir, progress
        ),
        "val": _write_split(run_layout.shards("val"), [r for r in rows if r["id"] in val_ids], tokens_dir, progress),
        "settings": settings,
    }
    progress.close()
    write_json_atomic(run_layout.split, {"settings": settings, "train": sorted(train_ids), "val": sorted(val_ids)})
    write_json_atomic(run_layout.packed_summary, summary)
    log.info(
        "pack: %d train clips (%.1f min) and %d held-out val clips (%.1f min) in %s",
        summary["train"]["clips"],
        summary["train"]["hours"] * 60,
        summary["val"]["clips"],
        summary["val"]["hours"] * 60,
        out,
    )
    state.record(
        "pack",
        fingerprint=fingerprint,
        started=started,
        shards={s: summary[s]["shards"] for s in ("train", "val")},
        train_clips=summary["train"]["clips"],
        val_clips=summary["val"]["clips"],
    )
    return StageResult(_line(run_layout, summary["train"]["clips"], summary["val"]["clips"]), data=summary)
