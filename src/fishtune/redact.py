"""The Hugging Face token: where it comes from, and keeping it out of logs, status files and model cards.

The token is read from ``HF_TOKEN`` (or the older ``HUGGING_FACE_HUB_TOKEN``) or from a mounted secret file
(``HF_TOKEN_FILE``, default ``/run/secrets/hf_token``, Docker's and BuildKit's secret location). It is only
ever passed to huggingface_hub; every log line, the stage logs, ``status.json`` and the model card go through
:func:`redact`, which replaces any known token with ``***``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from fishtune import weights
from fishtune.errors import InputError

TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
DEFAULT_TOKEN_FILE = "/run/secrets/hf_token"
MASK = "***"
MIN_SECRET = 8  # shorter strings are not tokens; masking them would garble ordinary text

_remembered: set[str] = set()


def token_file() -> Path:
    return Path(os.environ.get("HF_TOKEN_FILE") or DEFAULT_TOKEN_FILE)


def remember(secret: str | None) -> None:
    if secret and len(secret.strip()) >= MIN_SECRET:
        _remembered.add(secret.strip())


def parse_token_file(content: str, path: Path) -> str | None:
    """The one token reader: the file's single line that is not blank and not a ``#`` comment (``None`` when there
    is none). Every line is remembered for masking first, so even a refused file never shows up in a log."""
    for line in content.splitlines():
        remember(line.strip())
    tokens = weights.token_lines(content)
    if len(tokens) > 1:
        raise InputError(
            f"the Hugging Face token file {path} holds {len(tokens)} lines that are not comments",
            hint="put only the token in it (lines starting with # are ignored), or set HF_TOKEN",
        )
    return tokens[0] if tokens else None


def read_token() -> tuple[str | None, str]:
    """``(token, where it came from)``; ``(None, ...)`` for anonymous access. Never logs the value."""
    for name in TOKEN_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            remember(value)
            return value, f"${name}"
    path = token_file()
    try:
        content = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None, f"none (no $HF_TOKEN, no token file {path}): anonymous"
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(
            f"cannot read the Hugging Face token file {path}: {getattr(err, 'strerror', None) or err}",
            hint="mount a readable file holding only the token, or set HF_TOKEN",
        ) from err
    value = parse_token_file(content, path)
    if not value:
        return None, f"none (token file {path} is empty): anonymous"
    return value, f"the file {path}"


def known() -> list[str]:
    found = set(_remembered)
    for name in TOKEN_ENV:
        value = os.environ.get(name, "").strip()
        if len(value) >= MIN_SECRET:
            found.add(value)
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every known secret masked (``secrets``: :func:`known`'s list, when the caller has it)."""
    for secret in known() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactFilter(logging.Filter):
    """A logging filter that masks tokens in the formatted message (and in exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = known()  # once per record: an environment scan and a sort
        if not secrets:
            return True
        msg = record.getMessage()
        clean = redact(msg, secrets)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip(), secrets)
            record.exc_info = None
        return True


def load_file_token() -> None:
    """Remember the token file's content (if any) so it is masked even before a stage reads it."""
    with contextlib.suppress(OSError, UnicodeDecodeError, InputError):
        parse_token_file(token_file().read_text(encoding="utf-8"), token_file())
