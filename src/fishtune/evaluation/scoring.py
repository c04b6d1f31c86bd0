"""Measuring the systems of an evaluation: every system speaks every text (same seeds and generation settings as
``synthesize``), then each sample is scored (speaker similarity, CER from Whisper, duration and silence ratios)
and flagged; per system the loss on the held-out split (:func:`fishtune.evaluation.loss.heldout_loss`)."""

from __future__ import annotations

import gc
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from fishtune import audio, devices
from fishtune.evaluation import asr, metrics
from fishtune.evaluation.loss import KEYS, heldout_batches, heldout_loss, heldout_set
from fishtune.evaluation.plan import Item, System
from fishtune.layout import RunLayout
from fishtune.progress import Progress

log = logging.getLogger("fishtune.evaluate")

MUTE, LONG, SHORT = 0.9, 2.0, 0.5  # flag thresholds: silence ratio, duration ratio above / below


def load_system(cfg: DictConfig, system: System):
    from fishtune.generation import load_model
    from fishtune.modeling.llm import load_llm

    if system.kind == "base":
        return load_llm(cfg.model.path)
    if system.kind == "merged":
        return load_llm(system.path)
    model, _ = load_model(cfg, "lora", checkpoint=system.path)
    return model


def _speak(cfg: DictConfig, model, codec, items: list[Item], folder: Path, device, progress) -> dict:
    """One system's wav per item under ``folder`` (``audio/<system>/<id>.wav``); returns {item id: info}."""
    from fishtune.generation import generate_codes
    from fishtune.modeling import codec as codec_mod

    s = cfg.synthesize
    sr = int(codec.sample_rate)
    out = {}
    for i, item in enumerate(items):
        torch.manual_seed(int(s.seed) + i)
        t0 = time.perf_counter()
        codes = generate_codes(model, device, item.normalized, s)
        empty = codes is None or codes.shape[1] == 0
        wave = np.zeros(sr // 10, dtype=np.float32) if empty else codec_mod.decode(codec, codes, device).numpy()
        rel = f"audio/{folder.name}/{item.id}.wav"
        audio.save_wav(folder / f"{item.id}.wav", wave.astype(np.float32), sr)
        out[item.id] = {
            "file": rel,
            "seconds": round(len(wave) / sr, 3),
            "frames": 0 if empty else int(codes.shape[1]),
            "compute_seconds": round(time.perf_counter() - t0, 3),
            "no_audio": empty,
        }
        progress.update(1, amount=len(wave) / sr)
    return out


def synthesize_all(cfg, systems: list[System], items: list[Item], out_dir: Path, device, progress) -> tuple[dict, dict]:
    """Every system x item -> ``out_dir/audio/<system>/<id>.wav``; returns ({system: {item: info}}, {system: held-out
    loss or None})."""
    from fishtune.generation import inference_dtype
    from fishtune.modeling import codec as codec_mod

    dtype = inference_dtype(device)
    codec = codec_mod.load_codec(cfg.model.path, device=device)
    results: dict[str, dict] = {}
    losses: dict[str, dict | None] = {}
    held_out = None
    for system in systems:
        model = load_system(cfg, system).to(device=device, dtype=dtype).eval()
        if system is systems[0]:  # read and tokenised once: every system has the base model's tokenizer
            held_out = heldout_set(RunLayout.of(cfg).shards("val"), model, int(cfg.train.max_length))
        batches = heldout_batches(held_out, model, int(cfg.train.val_batch_size)) if held_out is not None else []
        losses[system.name] = heldout_loss(model, batches, device, dtype)
        results[system.name] = _speak(cfg, model, codec, items, out_dir / "audio" / system.name, device, progress)
        del model
        gc.collect()
        devices.empty_cache()
    del codec
    return results, losses


def _references(held: list[Item], out_dir: Path) -> dict:
    """The held-out recordings, copied so that the report folder stands alone."""
    out = {}
    for item in held:
        rel = f"audio/reference/{item.id}.wav"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.clip, out_dir / rel)
        out[item.id] = {"file": rel, "seconds": round(item.expected_seconds, 3), "clip": item.clip_id}
    return out


def _speaker_and_sound(cfg, items, results, out_dir: Path, device, notes: list[str], keep_16k: bool) -> tuple:
    """Similarity to the held-out speaker, duration and silence ratios, in place; returns (encoder name, {id(result):
    its wave at Whisper's rate} when ``keep_16k``)."""
    silence_db = float(cfg.evaluate.silence_db)
    held = [i for i in items if i.kind == "heldout"]
    log.info("speaker similarity: resemblyzer on %s", device)
    enc = metrics.SpeakerEncoder(str(device))
    ref_emb = {item.id: enc.embed(*audio.read_wav(item.clip), silence_db) for item in held}
    reference = metrics.centroid(list(ref_emb.values()))
    if held and reference is None:
        notes.append("the held-out clips have no audible sound: speaker similarity not computed")
    at_16k: dict[int, np.ndarray] = {}  # id(result) -> its wave at Whisper's rate, read once for both models
    for system, per_item in results.items():
        for item in (i for i in items if i.id in per_item):
            r = per_item[item.id]
            wave, sr = audio.read_wav(out_dir / r["file"])
            r["silence_ratio"] = round(metrics.silence_ratio(wave, sr, silence_db), 4)
            if keep_16k:
                at_16k[id(r)] = metrics.resample(wave, sr, asr.SAMPLE_RATE)
            if system == "reference":
                others = [e for k, e in ref_emb.items() if k != item.id]
                r["similarity"] = metrics.similarity(ref_emb[item.id], metrics.centroid(others)) if others else None
                r["duration_ratio"] = None
            else:
                r["similarity"] = metrics.similarity(enc.embed(wave, sr, silence_db), reference)
                r["duration_ratio"] = metrics.duration_ratio(r["seconds"], item.expected_seconds)
            for key in ("similarity", "duration_ratio"):
                if r[key] is not None:
                    r[key] = round(r[key], 4)
    return f"{enc.name} {enc.version}", at_16k


def _transcribe(cfg, items, results, at_16k: dict, device, reason: str | None, notes: list[str]) -> dict:
    """Whisper transcripts and CER per sample, in place (skipped with a note without an ASR model); the ASR info."""
    ev = cfg.evaluate
    info = {"model": None, "available": False, "note": None}
    if reason:
        notes.append(f"CER not computed: {reason}")
        info["note"] = reason
        log.warning("evaluate: CER skipped: %s", reason)
        return info
    whisper = asr.Whisper(ev.asr_model, device, ev.asr_language or cfg.recipe.language, int(ev.asr_max_new_tokens))
    info.update(model=str(ev.asr_model), available=True, language=whisper.language)
    log.info("ASR: Whisper from %s on %s (language %s)", ev.asr_model, device, whisper.language or "auto")
    todo = [(r, item) for per_item in results.values() for item in items if (r := per_item.get(item.id))]
    progress = Progress("evaluate asr", len(todo), unit="samples", logger=log)
    for r, item in todo:
        r["transcript"] = whisper.transcribe(at_16k.pop(id(r)))
        c = metrics.cer(item.text, r["transcript"], str(cfg.recipe.normalize))
        r["cer"] = round(c, 4) if c is not None else None
        progress.update(1)
    progress.close()
    return info


def score(cfg, items: list[Item], results: dict, out_dir: Path, device, notes: list[str]) -> dict:
    """Speaker similarity, ASR + CER, duration and silence ratios and flags; fills ``results`` in place and adds the
    held-out recordings as the 'reference' system."""
    held = [i for i in items if i.kind == "heldout"]
    if held:
        results = {"reference": _references(held, out_dir), **results}
    reason = asr.unavailable_reason(cfg.evaluate.asr_model)
    encoder, at_16k = _speaker_and_sound(cfg, items, results, out_dir, device, notes, keep_16k=not reason)
    asr_info = _transcribe(cfg, items, results, at_16k, device, reason, notes)
    for per_item in results.values():
        for r in per_item.values():
            r.setdefault("cer", None)
            r.setdefault("transcript", None)
            r["flags"] = flags(r)
    devices.empty_cache()
    return {"results": results, "asr": asr_info, "reference_clips": [i.clip_id for i in held], "encoder": encoder}


def flags(r: dict) -> list[str]:
    out = []
    if r.get("no_audio"):
        out.append("no audio")
    if (r.get("silence_ratio") or 0) >= MUTE:
        out.append("mute")
    d = r.get("duration_ratio")
    if d is not None and d > LONG:
        out.append("too long")
    if d is not None and d < SHORT:
        out.append("too short")
    return out


def aggregate(per_item: dict, losses: dict | None) -> dict:
    """A system's means over its samples, its held-out losses and how many samples were flagged."""
    rows = list(per_item.values())
    out = {
        k: (round(v, 4) if (v := metrics.mean(r.get(k) for r in rows)) is not None else None)
        for k in ("cer", "similarity", "duration_ratio", "silence_ratio")
    }
    for k in KEYS:
        out[k] = round(losses[k], 5) if losses else None
    out["samples"] = len(rows)
    out["flagged"] = sum(1 for r in rows if r.get("flags"))
    return out
