"""Speech recognition for the CER metric: Whisper through ``transformers``, from a local folder only.

The folder (``evaluate.asr_model``, default ``$FISHTUNE_CACHE/models/whisper-large-v3-turbo``) holds a Whisper
checkpoint in transformers' layout (``config.json``, ``model.safetensors``, tokenizer and
``preprocessor_config.json``), e.g. a snapshot of ``openai/whisper-large-v3-turbo``; the image can bake it in like
the base weights. Nothing is downloaded here: with no folder, CER is skipped and the report says why.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fishtune.errors import InputError

log = logging.getLogger("fishtune.evaluate")

SAMPLE_RATE = 16000
CHUNK_SECONDS = 30.0  # Whisper's window; longer audio uses its long-form (sequential) decoding
NEEDED = ("config.json", "preprocessor_config.json")
WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
UNDETERMINED = {"", "und", "none", "null", "auto"}


def unavailable_reason(folder: str | os.PathLike | None) -> str | None:
    """Why Whisper cannot be used from ``folder`` (None when it looks complete)."""
    if not folder:
        return "no ASR model configured (evaluate.asr_model is null)"
    path = Path(folder)
    hint = (
        "put a Whisper checkpoint in transformers format there (e.g. a snapshot of openai/whisper-large-v3-turbo), "
        "bake it into the image, or set evaluate.asr_model"
    )
    if not path.is_dir():
        return f"no Whisper weights in {path} (evaluate.asr_model): {hint}"
    missing = [n for n in NEEDED if not (path / n).is_file()]
    if not any((path / n).is_file() for n in WEIGHTS):
        missing.append("model.safetensors")
    if missing:
        return f"the Whisper folder {path} lacks {', '.join(missing)}: {hint}"
    return None


class Whisper:
    def __init__(self, folder: str | os.PathLike, device, language: str | None, max_new_tokens: int = 200):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.folder = Path(folder)
        self.device = device
        self.dtype = torch.float16 if getattr(device, "type", str(device)).startswith("cuda") else torch.float32
        self.language = None if (language or "").lower() in UNDETERMINED else language
        self.max_new_tokens = int(max_new_tokens)
        try:
            # local_files_only: a folder path never reaches the Hub (and no process-wide offline switch is set,
            # since a later stage in the same process, e.g. publish, may need the Hub)
            self.processor = WhisperProcessor.from_pretrained(str(self.folder), local_files_only=True)
            model = WhisperForConditionalGeneration.from_pretrained(
                str(self.folder),
                local_files_only=True,
                use_safetensors=True,  # never a pickled .bin
            )
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"cannot load the Whisper model in {self.folder}: {first}",
                hint="replace the folder with a complete transformers Whisper checkpoint, or remove it to skip CER",
            ) from err
        self.model = model.to(device=device, dtype=self.dtype).eval()

    def transcribe(self, wave: np.ndarray) -> str:
        """One mono 16 kHz wave -> text."""
        import torch

        wave = np.asarray(wave, dtype=np.float32)
        long_form = len(wave) > CHUNK_SECONDS * SAMPLE_RATE
        extra = {"truncation": False, "padding": "longest"} if long_form else {}
        feats = self.processor(
            wave, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True, **extra
        )
        kwargs = {"task": "transcribe", "max_new_tokens": self.max_new_tokens}
        if self.language:
            kwargs["language"] = self.language
        with torch.inference_mode():
            ids = self.model.generate(
                feats.input_features.to(self.device, self.dtype),
                attention_mask=feats.attention_mask.to(self.device),
                **kwargs,
            )
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
