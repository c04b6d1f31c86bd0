"""Stage ``extract``: prepared clips -> VQ tokens with the codec encoder (:mod:`fishtune.extraction`).

- Clips are sorted by duration and batched by total padded audio length (``extract.max_batch_seconds``), planned
  once per run; a CUDA out-of-memory error halves the batch and lowers the limit for the rest of the run.
- ``extract.devices``: one encoding process per GPU, each taking every Nth planned batch and writing its own
  token files: the files are the same as one process's.
- Each ``.npy`` is written atomically with a ``.json`` naming the audio's and the codec's sha256; a clip whose
  token file matches both is skipped, so reruns and resumes after a kill redo only what is missing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from fishtune import devices, extraction, tokens
from fishtune.layout import RunLayout
from fishtune.manifest import read_manifest
from fishtune.modeling import codec as codec_mod
from fishtune.modeling.files import file_hash
from fishtune.progress import Progress
from fishtune.results import StageResult
from fishtune.runstate import RunState, remove_temp_files, sha256_file, sha256_json, write_json_atomic

log = logging.getLogger("fishtune.extract")


def codec_fingerprint(cfg: DictConfig) -> str:
    model_dir = Path(cfg.model.path)
    conf = codec_mod.codec_config_path(model_dir)
    return sha256_json([file_hash(model_dir / "codec.pth", Path(cfg.paths.cache)), sha256_file(conf)])


def run(cfg: DictConfig) -> StageResult:
    """Hash every clip, encode those without a current token file on ``extract.devices`` processes, remove token
    files of clips no longer in the manifest, check every file and write the summary."""
    started = time.time()
    layout = RunLayout.of(cfg)
    rows = read_manifest(layout.manifest)
    device = devices.pick(str(cfg.extract.device))
    workers = extraction.worker_devices(device, cfg.extract.devices)
    codec_sha = codec_fingerprint(cfg)
    audio_sha = {row["id"]: sha256_file(layout.clips / row["path"]) for row in rows}
    todo = [r for r in rows if not tokens.is_current(layout.tokens, r["id"], audio_sha[r["id"]], codec_sha)]
    log.info("extract: %d clips, %d cached (same audio and codec), %d to encode on %s", len(rows),
             len(rows) - len(todo), len(todo), _describe(workers))  # fmt: skip
    ooms = 0
    if todo:
        job = extraction.EncodeJob(str(cfg.model.path), layout.clips, layout.tokens,
                                   devices.dtype_from_name(str(cfg.extract.precision)),
                                   float(cfg.extract.max_batch_seconds), int(cfg.extract.max_batch_clips), codec_sha,
                                   {r["id"]: audio_sha[r["id"]] for r in todo})  # fmt: skip
        progress = Progress("extract", len(todo), unit="clips", amount_unit="audio s", logger=log)
        ooms = extraction.encode_all(job, todo, workers, progress)
        progress.close()
    removed = _remove_orphans(layout.tokens, {r["id"] for r in rows})
    shapes = [tokens.load(tokens.paths(layout.tokens, r["id"])[0]).shape for r in rows]  # also checks every file
    summary = {
        "clips": len(rows),
        "encoded": len(todo),
        "cached": len(rows) - len(todo),
        "removed_stale": removed,
        "codec_sha256": codec_sha,
        "num_codebooks": sorted({shape[0] for shape in shapes}),
        "frames": int(np.sum([shape[1] for shape in shapes])),
        "oom_backoffs": ooms,
        "device": str(device),
        "processes": len(workers),
    }
    write_json_atomic(layout.tokens_summary, summary)
    figures = {k: summary[k] for k in ("clips", "encoded", "cached")}
    fingerprint = sha256_json([codec_sha, sorted(audio_sha.values())])
    RunState(layout.root).record("extract", fingerprint=fingerprint, started=started, **figures)
    outputs = f"tokens/ ({summary['clips']} clips: {summary['encoded']} encoded, {summary['cached']} cached)"
    return StageResult(outputs, skipped=not todo, data=summary)  # every clip cached: nothing was encoded


def _describe(workers) -> str:
    return str(workers[0]) if len(workers) == 1 else f"{len(workers)} processes ({', '.join(map(str, workers))})"


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
