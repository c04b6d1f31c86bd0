"""Text -> codes -> audio with a fine-tuned model: the model choice, Fish Speech's generation, reference clips.

Shared by the stages that speak (``synthesize``, ``evaluate``, ``serve``) and the synthesis benchmark, so that
every one of them loads the model and samples the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from fishtune import adapters, lora, text
from fishtune.errors import InputError, UsageError
from fishtune.layout import RunLayout
from fishtune.modeling import codec as codec_mod
from fishtune.modeling.llm import load_llm

log = logging.getLogger("fishtune.generation")

MODEL_KINDS = ("merged", "lora", "base")


class Stopped(Exception):
    """Raised inside generation when the caller's ``should_stop`` says so (a timed-out or cancelled request)."""


def resolve_checkpoint(cfg: DictConfig, which: str | None = None, use_evaluation: bool = True) -> Path:
    """``best``: the evaluate stage's pick (report/best_checkpoint.json, while that adapter is unchanged), else
    the lowest held-out val loss (train/best.ckpt); ``last``: the final adapter; or a path."""
    from fishtune.training import checkpoints

    which = str(which or cfg.merge.checkpoint)
    run = RunLayout.of(cfg)
    if which == "best" and use_evaluation:
        from fishtune.evaluation.pick import evaluated_best

        picked = evaluated_best(run)
        if picked is not None:
            return picked
    if which == "best":
        if run.best.is_file():
            return run.best
        log.warning("no %s (no validation ran?): using the final adapter %s", run.best, run.lora)
        which = "last"
    if which == "last":
        for cand in (run.lora, checkpoints.newest_intact(run.checkpoints)):
            if cand is not None and Path(cand).is_file():
                return Path(cand)
        raise InputError(f"no trained adapter in {run.train}", hint="run the train stage first (STAGE=train)")
    path = Path(which)
    if not path.exists():
        raise InputError(f"merge.checkpoint {path} does not exist", hint="use best, last or a path to a .ckpt")
    return path


def adapter_for(cfg: DictConfig, path: str | os.PathLike) -> adapters.Adapter:
    """The adapter at ``path`` for this run's base model: its own settings (``lora.*`` only for files that carry
    none), refused when it was trained on another base unless ``lora.allow_other_base``."""
    adapter = adapters.read(path, fallback=lora.LoraSettings.from_config(cfg))
    adapters.check_base(adapter, cfg.model.path, cfg.paths.cache, bool(cfg.lora.allow_other_base))
    return adapter


def available_kind(cfg: DictConfig) -> str:
    """``auto``'s choice: the merged model when there is one, else base + the trained adapter, else the base."""
    run = RunLayout.of(cfg)
    if run.merged_model.is_file():
        return "merged"
    if run.best.is_file() or run.lora.is_file():
        return "lora"
    return "base"


def load_model(cfg: DictConfig, which: str, checkpoint: str | os.PathLike | None = None):
    """``merged`` (merge.output), ``lora`` (base + an adapter folded in; ``checkpoint`` or merge.checkpoint) or
    ``base``. Returns (model on CPU, folder with its codec)."""
    if which == "merged":
        folder = RunLayout.of(cfg).model
        if not (folder / "model.pth").is_file():
            raise InputError(
                f"no merged model in {folder}", hint="run the merge stage first, or use synthesize.model=lora"
            )
        return load_llm(folder), folder
    if which not in ("lora", "base"):
        raise UsageError(f"unknown model choice '{which}'", hint="use merged, lora or base")
    if which == "base":
        return load_llm(cfg.model.path), Path(cfg.model.path)
    ckpt = Path(checkpoint) if checkpoint is not None else resolve_checkpoint(cfg)
    adapter = adapter_for(cfg, ckpt)
    model = adapters.attach(load_llm(cfg.model.path), adapter)
    lora.fold(model)  # plain layers with the adapter folded in: generation at the base model's speed
    s = adapter.settings
    log.info("using base model + LoRA %s (r=%d, alpha=%g; not merged on disk)", ckpt, s.r, s.alpha)
    return model, Path(cfg.model.path)


def codec_folder(cfg: DictConfig, model_folder: Path) -> Path:
    """The model folder's own codec when it has one (a merged folder does), else the base model's."""
    return model_folder if (model_folder / "codec.pth").is_file() else Path(cfg.model.path)


def inference_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def encode_reference(
    codec, path: str | os.PathLike, transcript: str, normalizer: str, device
) -> tuple[str, torch.Tensor]:
    """A reference clip (any audio format) and its transcript -> (normalised text, codes) for the prompt."""
    from fishtune import audio

    clip = audio.load(path, int(codec.sample_rate))
    (codes,) = codec_mod.encode(codec, [torch.from_numpy(clip.samples)], device)
    log.info("reference clip %s: %.1f s, %d frames", path, clip.duration, codes.shape[1])
    return text.normalize(str(transcript), normalizer), codes


def generate_codes(
    model,
    device,
    clean: str,
    params,
    prompt_text=(),
    prompt_tokens=(),
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor | None:
    """One normalised text -> codes ``[num_codebooks, frames]`` (or None) with Fish Speech's ``generate_long``.

    ``params`` has ``max_new_tokens``, ``temperature``, ``top_p``, ``repetition_penalty`` (e.g. ``cfg.synthesize``);
    seed torch before calling for reproducible sampling. ``should_stop`` is asked before every frame; when it
    says yes, :class:`Stopped` is raised (generation cannot otherwise be interrupted).
    """
    from fish_speech.models.text2semantic import inference as inf

    step = inf.decode_one_token_ar  # looked up per call: the benchmark wraps it to time the first frame
    if should_stop is not None:
        plain = step

        def step(*args, **kwargs):
            if should_stop():
                raise Stopped("generation stopped")
            return plain(*args, **kwargs)

    codes = None
    with torch.inference_mode():
        for resp in inf.generate_long(
            model=model,
            device=device,
            decode_one_token=step,
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


def decode(codec, codes: torch.Tensor, device) -> np.ndarray:
    """Codes -> float32 mono samples at the codec's rate."""
    return codec_mod.decode(codec, codes, device).numpy().astype(np.float32).reshape(-1)
