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

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fishtune import adapters, audio, devices, lora, text
from fishtune.errors import InputError, StageFailed, UsageError
from fishtune.modeling import codec as codec_mod
from fishtune.modeling.llm import load_llm
from fishtune.progress import Progress
from fishtune.runstate import RunState, sha256_json, write_jsonl_atomic

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
    return [str(x) for x in cfg.recipe.get("samples", [])] or ["Hyvää päivää."]


def load_model(cfg: DictConfig, which: str, checkpoint: str | os.PathLike | None = None):
    """``merged`` (merge.output), ``lora`` (base + an adapter folded in; ``checkpoint`` or merge.checkpoint) or
    ``base``. Returns (model on CPU, folder with its codec)."""
    if which == "merged":
        folder = Path(cfg.merge.output)
        if not (folder / "model.pth").is_file():
            raise InputError(
                f"no merged model in {folder}", hint="run the merge stage first, or use synthesize.model=lora"
            )
        return load_llm(folder), folder
    if which not in ("lora", "base"):
        raise UsageError(f"unknown synthesize.model '{which}'", hint="use merged, lora or base")
    if which == "base":
        return load_llm(cfg.model.path), Path(cfg.model.path)
    from fishtune.stages.merge import resolve_checkpoint

    ckpt = Path(checkpoint) if checkpoint is not None else resolve_checkpoint(cfg)
    adapter = adapters.read(ckpt, fallback=lora.LoraSettings.from_dict(OmegaConf.to_container(cfg.lora)))
    model = adapters.load_with_adapter(cfg.model.path, adapter, cfg.paths.cache, bool(cfg.lora.allow_other_base))
    lora.fold(model)  # plain layers with the adapter folded in: generation at the base model's speed
    s = adapter.settings
    log.info("using base model + LoRA %s (r=%d, alpha=%g; not merged on disk)", ckpt, s.r, s.alpha)
    return model, Path(cfg.model.path)


def reference(cfg: DictConfig, codec, device) -> tuple[list[str], list[torch.Tensor]]:
    s = cfg.synthesize
    if not s.reference_audio:
        return [], []
    if not s.reference_text:
        raise UsageError("synthesize.reference_audio needs synthesize.reference_text (its transcript)")
    clip = audio.load(s.reference_audio, int(codec.sample_rate))
    (codes,) = codec_mod.encode(codec, [torch.from_numpy(clip.samples)], device)
    ref_text = text.normalize(str(s.reference_text), str(cfg.recipe.normalize))
    log.info("reference clip %s: %.1f s, %d frames", s.reference_audio, clip.duration, codes.shape[1])
    return [ref_text], [codes]


def generate_codes(model, device, clean: str, params, prompt_text=(), prompt_tokens=()) -> torch.Tensor | None:
    """One normalised text -> codes ``[num_codebooks, frames]`` (or None) with Fish Speech's ``generate_long``.

    ``params`` has ``max_new_tokens``, ``temperature``, ``top_p``, ``repetition_penalty`` (e.g. ``cfg.synthesize``);
    seed torch before calling for reproducible sampling. Shared by ``synthesize`` and ``evaluate``.
    """
    from fish_speech.models.text2semantic.inference import decode_one_token_ar, generate_long

    codes = None
    with torch.inference_mode():
        for resp in generate_long(
            model=model,
            device=device,
            decode_one_token=decode_one_token_ar,
            text=clean,
            max_new_tokens=int(params.max_new_tokens),
            temperature=float(params.temperature),
            top_p=float(params.top_p),
            repetition_penalty=float(params.repetition_penalty),
            prompt_text=list(prompt_text),
            prompt_tokens=list(prompt_tokens),
        ):
            if resp.action == "sample":
                codes = resp.codes
    return codes


def run(cfg: DictConfig) -> dict:
    if not sys.stdout.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")  # Fish Speech's per-token bar; our progress lines suffice
    started = time.time()
    s = cfg.synthesize
    device = devices.pick(str(s.device))
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    lines = sentences(cfg)
    model, folder = load_model(cfg, str(s.model))
    model = model.to(device=device, dtype=dtype).eval()
    codec_dir = folder if (folder / "codec.pth").is_file() else Path(cfg.model.path)
    codec = codec_mod.load_codec(codec_dir, device=device)
    ref_texts, ref_codes = reference(cfg, codec, device)
    out_dir = Path(s.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr = int(codec.sample_rate)
    rows = []
    progress = Progress("synthesize", len(lines), unit="sentences", amount_unit="audio s", logger=log, every=0)
    for i, raw in enumerate(lines):
        clean = text.normalize(raw, str(cfg.recipe.normalize))
        torch.manual_seed(int(s.seed) + i)
        t0 = time.perf_counter()
        codes = generate_codes(model, device, clean, s, ref_texts, ref_codes)
        if codes is None or codes.shape[1] == 0:
            raise StageFailed(
                f"the model produced no audio for sentence {i + 1}: {raw!r}",
                hint="raise synthesize.max_new_tokens or check the model",
            )
        wave = codec_mod.decode(codec, codes, device)
        seconds = time.perf_counter() - t0
        path = out_dir / f"{i:03d}.wav"
        audio.save_wav(path, wave.numpy().astype(np.float32), sr)
        dur = wave.numel() / sr
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
    write_jsonl_atomic(out_dir / "index.jsonl", rows)
    total = sum(r["seconds"] for r in rows)
    log.info("synthesize: %d wavs, %.1f s of audio at %d Hz in %s (model: %s)", len(rows), total, sr, out_dir, s.model)
    RunState(cfg.run_dir).record(
        "synthesize",
        fingerprint=sha256_json([lines, str(s.model)]),
        started=started,
        wavs=len(rows),
        audio_seconds=round(total, 2),
    )
    return {"wavs": len(rows), "audio_seconds": total, "output": str(out_dir)}
