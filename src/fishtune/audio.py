"""Audio I/O: decoding any common format with torchcodec (FFmpeg), writing 16-bit PCM wav."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fishtune.errors import InputError
from fishtune.runstate import atomic_path

AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".mp3",
    ".ogg",
    ".opus",
    ".m4a",
    ".aac",
    ".wma",
    ".aiff",
    ".aif",
    ".webm",
)


class AudioReadError(InputError):
    """The file could not be decoded as audio."""


@dataclass
class Audio:
    samples: np.ndarray  # float32, mono, [-1, 1]
    sample_rate: int
    source_sample_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def load(path: str | os.PathLike, sample_rate: int) -> Audio:
    """Decode ``path``, downmix to mono and resample to ``sample_rate`` (FFmpeg's resampler)."""
    from torchcodec.decoders import AudioDecoder

    path = Path(path)
    try:
        meta = AudioDecoder(str(path)).metadata
        decoder = AudioDecoder(str(path), sample_rate=sample_rate, num_channels=1)
        samples = decoder.get_all_samples().data
    except Exception as err:  # torchcodec raises RuntimeError/ValueError with FFmpeg's text
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AudioReadError(f"cannot decode audio {path}: {reason}", hint="re-export it as wav/flac") from err
    data = samples.numpy().reshape(-1).astype(np.float32, copy=False)
    if data.size == 0:
        raise AudioReadError(f"audio {path} has no samples", hint="remove it or replace it")
    if not np.isfinite(data).all():
        raise AudioReadError(f"audio {path} contains NaN or infinite samples", hint="re-export it")
    return Audio(
        samples=data,
        sample_rate=sample_rate,
        source_sample_rate=int(meta.sample_rate or sample_rate),
        source_channels=int(meta.num_channels or 1),
    )


def peak_dbfs(samples: np.ndarray) -> float:
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def save_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM wav atomically; samples are clipped to [-1, 1]."""
    import soundfile as sf

    clipped = np.clip(samples, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), clipped, sample_rate, subtype="PCM_16", format="WAV")


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a wav written by :func:`save_wav` (fast path for our own clips)."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=False)
    if data.ndim > 1:
        data = data.mean(axis=1)
    return data, int(sr)
