"""Stage ``synthesize``: text -> wav with the fine-tuned model, through Fish Speech's own generation code.

Text comes from ``TEXT`` / ``synthesize.text`` (one wav), ``synthesize.text_file`` (one wav per line) or the
recipe's sample sentences; it is normalised like the training transcripts. The model is the merged folder
(default), the base model with the trained LoRA before merging (``synthesize.model=lora``), or the base model.
An optional reference clip + transcript conditions the voice (in-context prompt). Outputs
``samples/NNN.wav`` at the codec's rate and ``samples/index.jsonl`` (text, seconds, real-time factor).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from fishtune import audio, devices, generation, text
from fishtune.errors import InputError, StageFailed
from fishtune.layout import RunLayout
from fishtune.modeling import codec as codec_mod
from fishtune.progress import Progress
from fishtune.results import StageResult
from fishtune.runstate import (
    RunState,
    atomic_dir,
    check_replaceable,
    clean_leftovers,
    sha256_json,
    write_jsonl_atomic,
)

log = logging.getLogger("fishtune.synthesize")


def sentences(cfg: DictConfig) -> list[str]:
    s = cfg.synthesize
    if s.text:
        return [str(s.text)]
    if s.text_file:
        path = Path(s.text_file)
        if not path.is_file():
            raise InputError(f"synthesize.text_file {path} not found", hint="give a UTF-8 file, one sentence per line")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise InputError(f"{path} is not UTF-8", hint="re-save it as UTF-8") from err
        out = [line.strip() for line in lines if line.strip()]
        if not out:
            raise InputError(f"{path} has no sentences", hint="one sentence per line")
        return out
    return [str(x) for x in cfg.recipe.samples] or ["Hyvää päivää."]


def reference(cfg: DictConfig, codec, device) -> tuple[list[str], list[torch.Tensor]]:
    s = cfg.synthesize
    if not s.reference_audio:
        return [], []
    ref_text, codes = generation.encode_reference(
        codec, s.reference_audio, str(s.reference_text), str(cfg.recipe.normalize), device
    )
    return [ref_text], [codes]


def run(cfg: DictConfig) -> StageResult:
    if not sys.stdout.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")  # Fish Speech's per-token bar; our progress lines suffice
    started = time.time()
    s = cfg.synthesize
    device = devices.pick(str(s.device))
    dtype = generation.inference_dtype(device)
    lines = sentences(cfg)
    run = RunLayout.of(cfg)
    out_dir = run.samples
    check_replaceable(out_dir, "synthesize.output folder")  # before the model is loaded
    model, folder = generation.load_model(cfg, str(s.model))
    model = model.to(device=device, dtype=dtype).eval()
    codec = codec_mod.load_codec(generation.codec_folder(cfg, folder), device=device)
    ref_texts, ref_codes = reference(cfg, codec, device)
    clean_leftovers(out_dir)  # temp folders of a killed run
    with atomic_dir(out_dir, what="synthesize.output folder") as tmp:  # a crash keeps the old samples as they were
        rows = synthesize_lines(cfg, lines, model, codec, device, (ref_texts, ref_codes), tmp)
        write_jsonl_atomic(tmp / run.samples_index.name, rows)
    sr = int(codec.sample_rate)
    total = sum(r["seconds"] for r in rows)
    log.info("synthesize: %d wavs, %.1f s of audio at %d Hz in %s (model: %s)", len(rows), total, sr, out_dir, s.model)
    RunState(run).record(
        "synthesize",
        fingerprint=sha256_json([lines, str(s.model)]),
        started=started,
        wavs=len(rows),
        audio_seconds=round(total, 2),
    )
    line = f"{run.relative(out_dir)}/ ({len(rows)} wavs, {total:.1f} s of audio)"
    return StageResult(line, data={"wavs": len(rows), "audio_seconds": total, "output": str(out_dir)})


def synthesize_lines(cfg: DictConfig, lines: list[str], model, codec, device, ref, out: Path) -> list[dict]:
    """One wav per line in ``out``; returns the index rows."""
    s = cfg.synthesize
    ref_texts, ref_codes = ref
    sr = int(codec.sample_rate)
    rows = []
    progress = Progress("synthesize", len(lines), unit="sentences", amount_unit="audio s", logger=log, every=0)
    for i, raw in enumerate(lines):
        clean = text.normalize(raw, str(cfg.recipe.normalize))
        torch.manual_seed(int(s.seed) + i)
        t0 = time.perf_counter()
        codes = generation.generate_codes(model, device, clean, s, ref_texts, ref_codes)
        if codes is None or codes.shape[1] == 0:
            raise StageFailed(
                f"the model produced no audio for sentence {i + 1}: {raw!r}",
                hint="raise synthesize.max_new_tokens or check the model",
            )
        wave = generation.decode(codec, codes, device)
        seconds = time.perf_counter() - t0
        path = out / f"{i:03d}.wav"
        audio.save_wav(path, wave, sr)
        dur = wave.size / sr
        rows.append(
            {
                "file": path.name,
                "text": raw,
                "normalized": clean,
                "frames": int(codes.shape[1]),
                "seconds": round(dur, 3),
                "compute_seconds": round(seconds, 3),
                "real_time_factor": round(seconds / dur, 3) if dur else None,
            }
        )
        progress.update(1, amount=dur)
    progress.close()
    return rows
