"""``POST /v1/audio/speech``: the request as JSON (OpenAI's speech shape) or as the page's multipart form,
checked field by field into an engine :class:`~fishtune.serving.engine.Job`. Every refusal is a
:class:`BadRequest` with a one-line reason; nothing here touches the model.

Fields: ``input`` (required), ``voice``, ``response_format`` (wav, flac, mp3, opus, pcm), ``speed`` (1 only:
the model has no speaking-rate control), ``stream`` / ``stream_format=audio``, ``model`` (ignored: one model is
served), and fishtune's sampling fields ``temperature``, ``top_p``, ``repetition_penalty``, ``max_new_tokens``,
``seed``; from the form also ``reference_audio`` (a file) with ``reference_text``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from fishtune.serving.encode import MEDIA_TYPES, STREAMABLE
from fishtune.serving.engine import DEFAULT_VOICE, Engine, Job, Params

SAMPLING = ("temperature", "top_p", "repetition_penalty", "max_new_tokens")


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = " ".join(reason.split())
        self.status = status


async def read_fields(request: Request, max_bytes: int) -> tuple[dict[str, Any], UploadFile | None]:
    """The request's fields and its uploaded reference clip (form only)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise BadRequest(f"the request is {int(length) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB", 413)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        body = await request.body()
        try:
            fields = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadRequest(f"the body is not valid JSON: {err}") from err
        if not isinstance(fields, dict):
            raise BadRequest('the JSON body must be an object such as {"input": "Hyvää päivää"}')
        return fields, None
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=32)
        fields: dict[str, Any] = {}
        upload = None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "reference_audio":
                    raise BadRequest(f"unexpected file field '{key}': the only file is reference_audio")
                upload = value if (value.filename or value.size) else None
            else:
                fields[key] = value
        return fields, upload
    raise BadRequest(f"unsupported content type '{ctype or 'none'}': send application/json", 415)


def _number(fields: dict, name: str, default, low, high, integer: bool = False):
    value = fields.get(name)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a{'n integer' if integer else ' number'}, not {value!r}") from None
    if not math.isfinite(number) or not (low <= number <= high):
        raise BadRequest(f"{name} must be between {low:g} and {high:g}, not {number:g}")
    return number


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    if value in (None, "", 0, "0", "false", "False"):
        return False
    if value in (1, "1", "true", "True", "on"):
        return True
    raise BadRequest(f"stream must be true or false, not {value!r}")


def params(fields: dict, s: DictConfig) -> Params:
    lim = s.limits
    values = {}
    for name in SAMPLING:
        low, high = lim[name]
        values[name] = _number(fields, name, s.defaults[name], low, high, integer=name == "max_new_tokens")
    seed = _number(fields, "seed", None, 0, 2**31 - 1, integer=True)
    return Params(seed=seed, **values)


def output_format(fields: dict, default: str) -> tuple[str, bool]:
    fmt = str(fields.get("response_format") or default).lower()
    if fmt not in MEDIA_TYPES:
        raise BadRequest(f"unsupported response_format '{fmt}': use one of {', '.join(MEDIA_TYPES)}")
    stream = _flag(fields.get("stream"))
    stream_format = fields.get("stream_format")
    if stream_format not in (None, "", "audio"):
        raise BadRequest(f"unsupported stream_format '{stream_format}': only 'audio' (raw audio bytes) is served")
    stream = stream or stream_format == "audio"
    if stream and fmt not in STREAMABLE:
        raise BadRequest(f"streaming sends {' or '.join(STREAMABLE)}, not {fmt}: set response_format accordingly")
    speed = _number(fields, "speed", 1.0, 0.25, 4.0)
    if speed != 1.0:
        raise BadRequest("speed other than 1.0 is not supported: the model has no speaking-rate control")
    return fmt, stream


def text_field(fields: dict, name: str, limit: int, required: bool) -> str:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRequest(f"{name} is empty: give the text to speak")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise BadRequest(f"{name} is {len(value)} characters; the limit is {limit} (serve.max_chars)", 413)
    return value


async def reference(upload: UploadFile, transcript: str, engine: Engine, max_seconds: float):
    """An uploaded clip -> (normalised transcript, samples at the codec's rate); 400 when it is not audio."""
    from fishtune import audio

    if not transcript:
        raise BadRequest("reference_audio needs reference_text: the transcript of the clip")
    suffix = Path(upload.filename or "clip").suffix[:8]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(await upload.read())
        tmp.flush()
        try:
            clip = await run_in_threadpool(audio.load, tmp.name, engine.sample_rate)
        except audio.AudioReadError:
            name = upload.filename or "the upload"
            reason = f"reference_audio {name!r} is not audio FFmpeg can decode (use wav, flac, mp3, ogg)"
            raise BadRequest(reason) from None
    if clip.duration > max_seconds:
        raise BadRequest(f"reference_audio is {clip.duration:.0f} s long; the limit is {max_seconds:g} s", 413)
    return engine.normalize(transcript), clip.samples


async def parse(request: Request, s: DictConfig, engine: Engine) -> tuple[Job, str]:
    """The request -> (job, response format); :class:`BadRequest` otherwise."""
    fields, upload = await read_fields(request, int(float(s.max_upload_mb) * 1e6))
    raw = text_field(fields, "input", int(s.max_chars), required=True)
    clean = engine.normalize(raw)
    if not clean:
        raise BadRequest("input has nothing to speak after normalisation")
    fmt, stream = output_format(fields, str(s.default_format))
    voice = str(fields.get("voice") or DEFAULT_VOICE)
    if voice not in engine.voices:
        raise BadRequest(f"unknown voice '{voice}': use one of {', '.join(sorted(engine.voices))}")
    job = Job(text=clean, params=params(fields, s), voice=voice, stream=stream)
    transcript = text_field(fields, "reference_text", int(s.max_chars), required=False)
    if upload is not None:
        job.reference = await reference(upload, transcript, engine, float(s.max_reference_seconds))
    job.info = {"input": raw, "normalized": clean, "voice": "upload" if upload is not None else voice}
    return job, fmt
