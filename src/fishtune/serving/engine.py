"""The model behind the server: loaded once, used by one worker thread at a time (see :mod:`.scheduler`)."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from fishtune import devices, generation, text
from fishtune.errors import FishtuneError, InputError
from fishtune.modeling import codec as codec_mod

log = logging.getLogger("fishtune.serve")

DEFAULT_VOICE = "default"
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass
class Params:
    """Sampling settings of one request (already checked against ``serve.limits``)."""

    temperature: float
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    seed: int | None = None


@dataclass
class Job:
    """One synthesis: normalised text, settings, and the voice (a configured one or an uploaded clip)."""

    text: str
    params: Params
    voice: str = DEFAULT_VOICE
    reference: tuple[str, np.ndarray] | None = None  # (normalised transcript, samples at the codec's rate)
    stream: bool = False
    info: dict = field(default_factory=dict)

    def segments(self) -> list[str]:
        """Streaming speaks sentence by sentence (first audio after the first sentence); otherwise in one go."""
        if not self.stream:
            return [self.text]
        return [s for s in _SENTENCE_END.split(self.text) if s.strip()] or [self.text]


class NoAudio(FishtuneError):
    """The model ended the utterance before producing a frame."""


class Engine:
    """Model, codec and voices on one device; :meth:`speak` turns a :class:`Job` into samples."""

    def __init__(self, cfg: DictConfig):
        s = cfg.serve
        self.device = devices.pick(str(s.device))
        self.normalizer = str(cfg.recipe.normalize)
        self.kind = generation.available_kind(cfg) if str(s.model) == "auto" else str(s.model)
        started = time.perf_counter()
        model, folder = generation.load_model(cfg, self.kind)
        self.model_folder = folder
        self.model = model.to(device=self.device, dtype=generation.inference_dtype(self.device)).eval()
        self.codec = codec_mod.load_codec(generation.codec_folder(cfg, folder), device=self.device)
        self.sample_rate = int(self.codec.sample_rate)
        self.voices: dict[str, tuple[list[str], list[torch.Tensor]]] = {DEFAULT_VOICE: ([], [])}
        for name, voice in (s.voices or {}).items():
            if not voice.get("audio") or not voice.get("text"):
                raise InputError(f"serve.voices.{name} needs audio and text", hint="give a clip and its transcript")
            ref_text, codes = generation.encode_reference(
                self.codec, voice.audio, str(voice.text), self.normalizer, self.device
            )
            self.voices[str(name)] = ([ref_text], [codes])
        self._uploads: OrderedDict[str, tuple[list[str], list[torch.Tensor]]] = OrderedDict()
        self.load_seconds = time.perf_counter() - started
        log.info(
            "serve: %s model from %s on %s, %d voice(s), loaded in %.1f s",
            self.kind,
            folder,
            self.device,
            len(self.voices),
            self.load_seconds,
        )

    def normalize(self, raw: str) -> str:
        return text.normalize(raw, self.normalizer)

    def _prompt(self, job: Job) -> tuple[list[str], list[torch.Tensor]]:
        if job.reference is None:
            return self.voices[job.voice]
        transcript, samples = job.reference
        key = hashlib.sha256(samples.tobytes() + transcript.encode()).hexdigest()
        if key not in self._uploads:
            (codes,) = codec_mod.encode(self.codec, [torch.from_numpy(samples)], self.device)
            self._uploads[key] = ([transcript], [codes])
            while len(self._uploads) > 8:  # a few recent uploads, so replaying one does not encode it again
                self._uploads.popitem(last=False)
        self._uploads.move_to_end(key)
        return self._uploads[key]

    def speak(
        self,
        job: Job,
        should_stop: Callable[[], bool],
        on_chunk: Callable[[np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Samples (float32, mono, at :attr:`sample_rate`); ``on_chunk`` gets each sentence's audio as it is made."""
        started = time.perf_counter()
        prompt_text, prompt_codes = self._prompt(job)
        torch.manual_seed(job.params.seed if job.params.seed is not None else int.from_bytes(np.random.bytes(4)))
        pieces = []
        for segment in job.segments():
            codes = generation.generate_codes(
                self.model, self.device, segment, job.params, prompt_text, prompt_codes, should_stop
            )
            if codes is None or codes.shape[1] == 0:
                continue
            wave = generation.decode(self.codec, codes, self.device)
            if on_chunk is not None:
                on_chunk(wave)
            pieces.append(wave)
        if not pieces:
            raise NoAudio("the model produced no audio for this text", hint="try again, or raise max_new_tokens")
        out = np.concatenate(pieces)
        job.info.update(seconds=len(out) / self.sample_rate, compute_seconds=time.perf_counter() - started)
        return out

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "folder": str(Path(self.model_folder)),
            "device": str(self.device),
            "sample_rate": self.sample_rate,
            "voices": sorted(self.voices),
        }
