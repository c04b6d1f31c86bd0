"""Per-sample metrics of synthesised speech.

- **CER** (character error rate) of an ASR transcript against the text that was synthesised, computed with
  ``jiwer`` after :func:`cer_text`: the recipe's normaliser (numbers, dates and abbreviations to words, so
  "klo 9.15" and "kello yhdeksän viisitoista" agree), lower case, punctuation and symbols removed, whitespace
  collapsed. 0 is perfect; insertions can push it above 1 (babble).
- **Speaker similarity**: cosine similarity of resemblyzer's GE2E speaker embedding (its weights ship inside the
  package) of a sample with the mean embedding of the training speaker's held-out clips. 1 is identical;
  different human speakers typically score 0.5–0.75.
- **Duration ratio**: sample seconds / expected seconds (the reference clip's length for a held-out clip, else
  the text length at the training speaker's speaking rate). Far above 1: babble or a missed end; far below 1:
  truncated.
- **Silence ratio**: share of 20 ms frames quieter than ``silence_db`` dBFS. 1 is a mute output.
"""

from __future__ import annotations

import unicodedata
import warnings
from fractions import Fraction

import numpy as np

from fishtune import text

SPEAKER_SAMPLE_RATE = 16000  # resemblyzer and Whisper both take 16 kHz


def cer_text(s: str, normalizer: str) -> str:
    """The text CER is computed on: normalised by the recipe, lower case, no punctuation, single spaces."""
    s = text.normalize(str(s), normalizer).lower()
    s = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in s)
    return " ".join(s.split())


def cer(reference: str, hypothesis: str, normalizer: str = "none") -> float | None:
    """Character error rate of ``hypothesis`` against ``reference`` (None when the reference has no characters)."""
    import jiwer

    ref, hyp = cer_text(reference, normalizer), cer_text(hypothesis, normalizer)
    if not ref:
        return None
    if not hyp:
        return 1.0  # everything deleted
    return float(jiwer.cer(ref, hyp))


def frame_db(wave: np.ndarray, sample_rate: int, frame_seconds: float = 0.02) -> np.ndarray:
    """RMS level of consecutive frames in dBFS (-inf for digital silence)."""
    n = max(1, int(round(frame_seconds * sample_rate)))
    frames = len(wave) // n
    if frames == 0:
        return np.full(1, -np.inf) if not len(wave) else np.array([_db(np.sqrt(np.mean(np.square(wave))))])
    rms = np.sqrt(np.mean(np.square(wave[: frames * n].astype(np.float64).reshape(frames, n)), axis=1))
    return np.array([_db(r) for r in rms])


def _db(rms: float) -> float:
    return 20.0 * np.log10(rms) if rms > 0 else -np.inf


def silence_ratio(wave: np.ndarray, sample_rate: int, silence_db: float = -45.0) -> float:
    """Share of 20 ms frames whose RMS level is below ``silence_db`` dBFS (1.0: mute)."""
    return float(np.mean(frame_db(wave, sample_rate) < silence_db))


def duration_ratio(seconds: float, expected_seconds: float | None) -> float | None:
    if not expected_seconds or expected_seconds <= 0:
        return None
    return float(seconds / expected_seconds)


def speaking_rate(rows: list[dict]) -> float | None:
    """Characters (of the normalised transcript) per second over manifest rows with ``text`` and ``duration``."""
    chars = sum(len(str(r.get("text", ""))) for r in rows)
    seconds = sum(float(r.get("duration", 0.0)) for r in rows)
    return chars / seconds if chars and seconds > 0 else None


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy); exact rational ratio, float32 out."""
    if from_rate == to_rate:
        return np.asarray(wave, dtype=np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(int(to_rate), int(from_rate))
    return resample_poly(np.asarray(wave, dtype=np.float64), ratio.numerator, ratio.denominator).astype(np.float32)


class SpeakerEncoder:
    """resemblyzer's GE2E voice encoder; its weights (``pretrained.pt``) ship in the package."""

    name = "resemblyzer"

    def __init__(self, device: str = "cpu"):
        with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology (deprecated alias)
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(str(device), verbose=False)
        from importlib.metadata import version

        self.version = version("resemblyzer")

    def embed(self, wave: np.ndarray, sample_rate: int, silence_db: float = -45.0) -> np.ndarray | None:
        """L2-normalised embedding, or None for audio with no frame above ``silence_db`` (nothing to compare)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import normalize_volume, trim_long_silences

        w = resample(np.asarray(wave, dtype=np.float32), sample_rate, SPEAKER_SAMPLE_RATE)
        if not len(w) or float(np.max(frame_db(w, SPEAKER_SAMPLE_RATE))) < silence_db:
            return None
        w = normalize_volume(w, -30, increase_only=True)  # resemblyzer's own preprocessing (preprocess_wav)
        trimmed = trim_long_silences(w)
        if len(trimmed) >= SPEAKER_SAMPLE_RATE // 2:  # keep the untrimmed audio when the VAD hears ~no voice
            w = trimmed
        emb = self.encoder.embed_utterance(np.clip(w, -1.0, 1.0).astype(np.float32))
        norm = float(np.linalg.norm(emb))
        return emb / norm if norm > 0 else None


def centroid(embeddings: list[np.ndarray]) -> np.ndarray | None:
    """The normalised mean of embeddings (the speaker's reference)."""
    embs = [e for e in embeddings if e is not None]
    if not embs:
        return None
    mean = np.mean(np.stack(embs), axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None


def similarity(embedding: np.ndarray | None, reference: np.ndarray | None) -> float | None:
    """Cosine similarity; 0.0 for a sample with no audible sound; None without a reference."""
    if reference is None:
        return None
    if embedding is None:
        return 0.0
    return float(np.dot(embedding, reference))


def mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
