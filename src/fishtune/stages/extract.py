"""Stage ``extract``: prepared clips -> VQ tokens with the codec encoder.

- Clips are sorted by duration and batched by total padded audio length (``extract.max_batch_seconds``), so
  padding waste stays small and memory use is bounded by seconds of audio, not by a clip count.
- A CUDA out-of-memory error halves the batch and retries, and lowers the limit for the rest of the run; only
  a single clip that does not fit fails the stage.
- Each ``.npy`` is written atomically with a ``.json`` naming the audio's and the codec's sha256; a clip whose
  token file matches both is skipped, so reruns and resumes after a kill redo only what is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from fishtune import audio, devices, tokens
from fishtune.errors import InputError, StageFailed
from fishtune.layout import RunLayout
from fishtune.manifest import read_manifest
from fishtune.modeling import codec as codec_mod
from fishtune.modeling.files import file_hash
from fishtune.progress import Progress
from fishtune.runstate import RunState, remove_temp_files, sha256_file, sha256_json, write_json_atomic

log = logging.getLogger("fishtune.extract")


def plan_batches(rows: list[dict], max_seconds: float, max_clips: int) -> list[list[dict]]:
    """Group rows (sorted by duration) so that ``len(batch) * longest <= max_seconds`` and ``<= max_clips``."""
    batches: list[list[dict]] = []
    current: list[dict] = []
    for row in sorted(rows, key=lambda r: (r["duration"], r["id"])):
        longest = max([row["duration"]] + [r["duration"] for r in current])
        if current and (len(current) + 1 > max_clips or (len(current) + 1) * longest > max_seconds):
            batches.append(current)
            current = []
        current.append(row)
    if current:
        batches.append(current)
    return batches


def iter_batches(rows: list[dict], max_seconds: float, max_clips: int, extractor: Extractor) -> Iterator[list[dict]]:
    """Batches of ``rows`` to encode, planned again before each one with the extractor's current limit (it shrinks
    after an OOM), so that a back-off applies to everything still pending."""
    pending = rows
    while pending:
        batch = plan_batches(pending, max_seconds * extractor.limit_scale, max_clips)[0]
        done_ids = {r["id"] for r in batch}
        pending = [r for r in pending if r["id"] not in done_ids]
        yield batch


class Extractor:
    """Encodes batches with OOM back-off. ``encode_fn(waves) -> list of code arrays``."""

    def __init__(self, encode_fn: Callable[[list[torch.Tensor]], list[torch.Tensor]]):
        self.encode_fn = encode_fn
        self.oom_events = 0
        self.limit_scale = 1.0  # multiplies max_batch_seconds after an OOM

    def encode(self, waves: list[torch.Tensor], ids: list[str]) -> list[torch.Tensor]:
        try:
            return self.encode_fn(waves)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not devices.is_oom(err):
                raise
            devices.empty_cache()
            self.oom_events += 1
            if len(waves) == 1:
                raise StageFailed(
                    f"out of GPU memory encoding a single clip {ids[0]} ({waves[0].numel()} samples)",
                    hint="lower prepare.max_duration and rerun prepare, or use extract.device=cpu",
                ) from err
            self.limit_scale = max(self.limit_scale / 2, 1e-3)
            half = len(waves) // 2
            log.warning(
                "out of memory on a batch of %d clips: retrying as %d + %d (batch limit now x%.3g)",
                len(waves),
                half,
                len(waves) - half,
                self.limit_scale,
            )
            return self.encode(waves[:half], ids[:half]) + self.encode(waves[half:], ids[half:])


def codec_fingerprint(cfg: DictConfig) -> str:
    model_dir = Path(cfg.model.path)
    conf = codec_mod.codec_config_path(model_dir)
    return sha256_json([file_hash(model_dir / "codec.pth", Path(cfg.paths.cache)), sha256_file(conf)])


def run(cfg: DictConfig) -> dict:
    started = time.time()
    run_dir = Path(cfg.run_dir)
    rows = read_manifest(RunLayout.of(cfg).manifest)
    clips_root = run_dir / "clips"
    tokens_dir = run_dir / "tokens"
    device = devices.pick(str(cfg.extract.device))
    dtype = devices.dtype_from_name(str(cfg.extract.precision))
    codec_sha = codec_fingerprint(cfg)

    todo, audio_sha = [], {}
    for row in rows:
        audio_sha[row["id"]] = sha256_file(clips_root / row["path"])
        if not tokens.is_current(tokens_dir, row["id"], audio_sha[row["id"]], codec_sha):
            todo.append(row)
    cached = len(rows) - len(todo)
    log.info(
        "extract: %d clips, %d cached (same audio and codec), %d to encode on %s",
        len(rows),
        cached,
        len(todo),
        device,
    )

    extractor = None
    if todo:
        model = codec_mod.load_codec(cfg.model.path, device=device)
        sr = int(model.sample_rate)
        extractor = Extractor(lambda waves: codec_mod.encode(model, waves, device, dtype))
        progress = Progress("extract", len(todo), unit="clips", amount_unit="audio s", logger=log)
        max_seconds, max_clips = float(cfg.extract.max_batch_seconds), int(cfg.extract.max_batch_clips)
        for batch in iter_batches(todo, max_seconds, max_clips, extractor):
            waves = [_load_clip(clips_root / r["path"], sr) for r in batch]
            codes = extractor.encode(waves, [r["id"] for r in batch])
            for row, c in zip(batch, codes, strict=True):
                tokens.save(
                    tokens_dir,
                    row["id"],
                    c.numpy(),
                    {"audio_sha256": audio_sha[row["id"]], "codec_sha256": codec_sha, "id": row["id"]},
                )
            progress.update(len(batch), amount=sum(r["duration"] for r in batch))
        progress.close()

    removed = _remove_orphans(tokens_dir, {r["id"] for r in rows})
    shapes = [tokens.load(tokens.paths(tokens_dir, r["id"])[0]).shape for r in rows]  # also checks every file
    frames = [shape[1] for shape in shapes]
    summary = {
        "clips": len(rows),
        "encoded": len(todo),
        "cached": cached,
        "removed_stale": removed,
        "codec_sha256": codec_sha,
        "num_codebooks": sorted({shape[0] for shape in shapes}),
        "frames": int(np.sum(frames)),
        "oom_backoffs": extractor.oom_events if extractor else 0,
        "device": str(device),
    }
    write_json_atomic(tokens_dir / "summary.json", summary)
    RunState(run_dir).record(
        "extract",
        fingerprint=sha256_json([codec_sha, sorted(audio_sha.values())]),
        started=started,
        **{k: summary[k] for k in ("clips", "encoded", "cached")},
    )
    return summary


def _load_clip(path: Path, sample_rate: int) -> torch.Tensor:
    samples, sr = audio.read_wav(path)
    if sr != sample_rate:
        raise InputError(
            f"clip {path} is {sr} Hz but the codec needs {sample_rate} Hz",
            hint=f"rerun prepare with prepare.sample_rate={sample_rate}",
        )
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))


def _remove_orphans(tokens_dir: Path, ids: set[str]) -> int:
    removed = 0
    if not tokens_dir.is_dir():
        return 0
    for p in tokens_dir.glob("*/*"):
        if p.suffix in (".npy", ".json") and f"{p.parent.name}/{p.stem}" not in ids:
            p.unlink()
            removed += 1
    remove_temp_files(tokens_dir, subfolders=True)  # leftovers of a killed write
    return removed
