"""Stage ``prepare``: a dataset folder -> ``clips/`` with mono wav at the codec's rate, ``.lab`` text and a manifest.

Outputs (under ``<run_dir>/clips``):
- ``<speaker>/<clip>.wav`` (16-bit PCM, mono, ``prepare.sample_rate``) and ``<speaker>/<clip>.lab`` (normalised text)
- ``manifest.jsonl``: one line per accepted clip: id, speaker, path, lab, text (normalised), raw_text (the
  transcript as given), text_rules (the normaliser rules that changed it), duration, source
- ``rejected.jsonl``: one line per rejected input: id, source, reason
- ``stats.json``: counts, hours, duration statistics per speaker, and ``normalizer``: how many accepted
  transcripts the normaliser changed and how often each rule fired

Reruns reuse finished clips (journal keyed by source file, size, mtime, text and settings); a killed run
resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from fishtune import audio, formats, text
from fishtune.datasets import data_root as dataset_root
from fishtune.errors import StageFailed
from fishtune.layout import RunLayout
from fishtune.progress import Progress
from fishtune.results import StageResult
from fishtune.runstate import (
    Journal,
    RunState,
    sha256_json,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from fishtune.text import fi_morph

log = logging.getLogger("fishtune.prepare")


def _settings(cfg: DictConfig) -> dict:
    p = cfg.prepare
    return {
        "sample_rate": int(p.sample_rate),
        "normalize": str(p.normalize),
        "min_duration": float(p.min_duration),
        "max_duration": float(p.max_duration),
        "silence_db": float(p.silence_db),
        "max_chars_per_second": float(p.max_chars_per_second),
    }


def _item_key(item: formats.Item, settings: dict) -> str:
    st = item.audio.stat()
    return sha256_json([str(item.audio.resolve()), st.st_size, st.st_mtime_ns, item.text, item.id, settings])


def _process(item: formats.Item, out_root: Path, settings: dict) -> dict:
    """Convert one item; returns a manifest row or a rejection row (with 'reason')."""
    clean, rules = text.normalize_report(item.text or "", settings["normalize"])
    if not clean.strip():
        return {"reason": "transcript is empty after normalisation"}
    try:
        clip = audio.load(item.audio, settings["sample_rate"])
    except audio.AudioReadError as err:
        return {"reason": err.one_line()}
    dur = clip.duration
    if dur < settings["min_duration"]:
        return {"reason": f"too short: {dur:.2f} s < prepare.min_duration={settings['min_duration']}"}
    if dur > settings["max_duration"]:
        return {"reason": f"too long: {dur:.2f} s > prepare.max_duration={settings['max_duration']}"}
    if len(clean) / dur > settings["max_chars_per_second"]:
        return {
            "reason": f"transcript too long for the audio: {len(clean)} characters in {dur:.2f} s "
            f"({len(clean) / dur:.0f}/s > prepare.max_chars_per_second={settings['max_chars_per_second']:g}); "
            "wrong transcript?"
        }
    peak = audio.peak_dbfs(clip.samples)
    if peak < settings["silence_db"]:
        return {"reason": f"silent: peak {peak:.1f} dBFS < prepare.silence_db={settings['silence_db']}"}
    speaker, name = item.id.split("/", 1)
    wav = out_root / speaker / f"{name}.wav"
    lab = wav.with_suffix(".lab")
    audio.save_wav(wav, clip.samples, settings["sample_rate"])
    write_text_atomic(lab, clean + "\n")
    return {
        "id": item.id,
        "speaker": speaker,
        "path": str(wav.relative_to(out_root)),
        "lab": str(lab.relative_to(out_root)),
        "text": clean,
        "raw_text": item.text,
        "text_rules": rules,
        "duration": round(dur, 4),
        "source_sample_rate": clip.source_sample_rate,
        "source_channels": clip.source_channels,
        "peak_dbfs": round(peak, 2),
        "source": item.source,
    }


def normalizer_stats(accepted: list[dict]) -> dict:
    """How many accepted transcripts the normaliser changed, and how many transcripts each rule changed."""
    fired = Counter(rule for row in accepted for rule in row.get("text_rules", []))
    return {
        "changed": sum(1 for row in accepted if row.get("text_rules")),
        "unchanged": sum(1 for row in accepted if not row.get("text_rules")),
        "rules": dict(sorted(fired.items())),
    }


def duration_stats(durations: list[float]) -> dict:
    if not durations:
        return {"count": 0, "hours": 0.0}
    d = np.asarray(durations)
    return {
        "count": int(d.size),
        "hours": round(float(d.sum()) / 3600, 4),
        "seconds": round(float(d.sum()), 2),
        "min": round(float(d.min()), 3),
        "max": round(float(d.max()), 3),
        "mean": round(float(d.mean()), 3),
        "median": round(float(np.median(d)), 3),
        "p95": round(float(np.percentile(d, 95)), 3),
    }


def run(cfg: DictConfig) -> StageResult:
    started = time.time()
    run_layout = RunLayout.of(cfg)
    settings = _settings(cfg)
    text.normalize("", settings["normalize"])  # unknown normaliser -> usage error before any work
    if settings["normalize"] == "fi" and not fi_morph.available():  # warns once: numbers stay nominative
        log.warning("prepare: Finnish numbers are not inflected by case without Voikko")
    data_root = dataset_root(cfg)  # paths.data, or where the fetch stage put the dataset
    fmt, items = formats.read(data_root, str(cfg.prepare.format))
    out = run_layout.clips
    out.mkdir(parents=True, exist_ok=True)
    log.info("dataset %s: format %s, %d inputs", data_root, fmt, len(items))

    rejected: list[dict] = [
        {"id": it.id, "source": it.source, "reason": it.problem} for it in items if it.problem is not None
    ]
    usable = [it for it in items if it.problem is None]
    accepted: list[dict] = []
    keys: dict[str, str] = {it.id: _item_key(it, settings) for it in usable}
    workers = int(cfg.prepare.workers) or min(8, os.cpu_count() or 1)

    with Journal(run_layout.prepare_journal) as journal:
        todo = []
        for it in usable:
            hit = journal.get(keys[it.id])
            # An accepted clip journalled before text_rules existed is redone: its text may have changed too.
            done = hit and "text_rules" in hit and (out / hit["path"]).is_file() and (out / hit["lab"]).is_file()
            if hit and ("reason" in hit or done):
                _collect(hit, it, accepted, rejected)
            else:
                todo.append(it)
        if len(todo) < len(usable):
            log.info("resuming: %d of %d inputs already processed", len(usable) - len(todo), len(usable))
        progress = Progress("prepare", len(todo), unit="clips", amount_unit="audio s", logger=log)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for it, row in zip(todo, pool.map(lambda i: _process(i, out, settings), todo), strict=True):
                journal.add(keys[it.id], **row)
                _collect(row, it, accepted, rejected)
                progress.update(1, amount=row.get("duration", 0.0))
        progress.close()
        journal.compact(set(keys.values()))

    accepted.sort(key=lambda r: r["id"])
    rejected.sort(key=lambda r: r["id"])
    stats = _stats(fmt, len(items), accepted, rejected, settings)
    _log_result(len(items), stats, rejected, run_layout.rejected)
    # a failure leaves the earlier outputs as they were
    _check_result(cfg, run_layout.prepare_failed, data_root, len(items), accepted, rejected)
    _remove_orphans(out, accepted)
    write_jsonl_atomic(run_layout.manifest, accepted)
    write_jsonl_atomic(run_layout.rejected, rejected)
    write_json_atomic(run_layout.stats, stats)
    d = stats["durations"]
    RunState(run_layout).record(
        "prepare",
        fingerprint=sha256_json([sorted(keys.values()), settings]),
        started=started,
        accepted=len(accepted),
        rejected=len(rejected),
        hours=d.get("hours", 0.0),
    )
    line = f"{run_layout.relative(out)}/ ({len(accepted)} clips, {d.get('hours', 0.0):.2f} h; {len(rejected)} rejected)"
    return StageResult(line, data=stats)


def _log_result(inputs: int, stats: dict, rejected: list[dict], listed: Path) -> None:
    d = stats["durations"]
    log.info(
        "prepare: %d inputs, %d accepted (%.1f min, %.1f-%.1f s, median %.1f s), %d rejected (see %s)",
        inputs,
        stats["accepted"],
        d.get("seconds", 0) / 60,
        d.get("min", 0),
        d.get("max", 0),
        d.get("median", 0),
        len(rejected),
        listed,
    )
    for row in rejected[:10]:
        log.warning("rejected %s: %s", row["id"], row["reason"])
    if len(rejected) > 10:
        log.warning("... and %d more in %s", len(rejected) - 10, listed)


def _check_result(
    cfg: DictConfig, failed: Path, data_root: Path, inputs: int, accepted: list[dict], rejected: list[dict]
) -> None:
    """Fail before anything in ``clips/`` is replaced; the rejections of the failed attempt go to ``failed``
    (``logs/prepare.rejected.jsonl``), so the manifest, clips and reports of the last good run stay as they were."""
    limit = float(cfg.prepare.max_reject_fraction)
    if not accepted:
        write_jsonl_atomic(failed, rejected)
        raise StageFailed(
            f"no usable clips in {data_root}", hint=f"see {failed} for the reasons; clips/ was left as it was"
        )
    if inputs and len(rejected) / inputs > limit:
        write_jsonl_atomic(failed, rejected)
        raise StageFailed(
            f"{len(rejected)} of {inputs} inputs rejected ({len(rejected) / inputs:.0%} > "
            f"prepare.max_reject_fraction={limit:g})",
            hint=f"fix the inputs listed in {failed} or raise prepare.max_reject_fraction; clips/ was left as it was",
        )


def _stats(fmt: str, inputs: int, accepted: list[dict], rejected: list[dict], settings: dict) -> dict:
    per_speaker: dict[str, list[float]] = {}
    for row in accepted:
        per_speaker.setdefault(row["speaker"], []).append(row["duration"])
    return {
        "format": fmt,
        "inputs": inputs,
        "accepted": len(accepted),
        "rejected": len(rejected),
        "durations": duration_stats([r["duration"] for r in accepted]),
        "speakers": {spk: duration_stats(d) for spk, d in sorted(per_speaker.items())},
        "normalizer": normalizer_stats(accepted),
        "settings": settings,
    }


def _collect(row: dict, item: formats.Item, accepted: list[dict], rejected: list[dict]) -> None:
    if "reason" in row:
        rejected.append({"id": item.id, "source": item.source, "reason": row["reason"]})
    else:
        accepted.append({k: v for k, v in row.items() if k != "key"})


def _remove_orphans(out: Path, accepted: list[dict]) -> None:
    keep = {out / r["path"] for r in accepted} | {out / r["lab"] for r in accepted}
    for p in out.glob("*/*"):
        if (p.suffix in (".wav", ".lab") and p not in keep) or (p.name.startswith(".") and p.suffix == ".tmp"):
            p.unlink()
