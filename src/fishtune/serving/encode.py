"""Samples -> the bytes of an audio file: wav (16-bit PCM), flac, mp3, opus (Ogg) or raw 16-bit pcm.

wav and pcm are written here; flac, mp3 and opus go through torchcodec's FFmpeg encoder (already used for the
report's mp3 players), so no further library is needed.
"""

from __future__ import annotations

import struct

import numpy as np

MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "pcm": "audio/L16",
}
STREAMABLE = ("wav", "pcm")
OPUS_RATE = 48000  # libopus takes 8/12/16/24/48 kHz; FFmpeg resamples to it
MP3_BIT_RATE = 128000


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] -> little-endian signed 16-bit."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """A 44-byte mono 16-bit wav header; ``data_bytes=None`` for a stream of unknown length (the sizes say
    'as long as it goes', which browsers, FFmpeg and soundfile accept)."""
    size = 0xFFFFFFFF - 36 if data_bytes is None else data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", min(36 + size, 0xFFFFFFFF))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", size)
    )


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Mono float32 samples -> a whole file in ``fmt`` (one of :data:`MEDIA_TYPES`)."""
    if fmt == "pcm":
        return pcm16(samples)
    if fmt == "wav":
        data = pcm16(samples)
        return wav_header(sample_rate, len(data)) + data
    import torch
    from torchcodec.encoders import AudioEncoder

    if not len(samples):
        samples = np.zeros(sample_rate // 100, dtype=np.float32)  # FFmpeg refuses an empty stream
    enc = AudioEncoder(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None], sample_rate=sample_rate)
    if fmt == "mp3":
        out = enc.to_tensor("mp3", bit_rate=MP3_BIT_RATE, num_channels=1)
    elif fmt == "opus":
        out = enc.to_tensor("opus", num_channels=1, sample_rate=OPUS_RATE)
    elif fmt == "flac":
        out = enc.to_tensor("flac", num_channels=1)
    else:
        raise ValueError(f"unknown audio format {fmt!r}")
    return out.numpy().tobytes()
