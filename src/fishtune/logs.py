"""Logging: timestamped lines to stdout and to the stage's log file (``logs/<stage>.log``) at the same time."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from fishtune import redact

FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s | %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


class _LineBufferedFileHandler(logging.FileHandler):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, mode="a", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.flush()


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record is emitted (not the one at set-up, which a test's
    capture, or a process that swapped its streams, may since have closed)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_fishtune_stdout", False) for h in root.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        handler._fishtune_stdout = True  # type: ignore[attr-defined]
        handler.addFilter(redact.RedactFilter())  # the HF token never reaches a log
        root.addHandler(handler)
    redact.load_file_token()
    # Fish Speech logs through loguru; route it to the same place at WARNING and above.
    try:
        from loguru import logger as loguru_logger

        loguru_logger.remove()
        loguru_logger.add(lambda msg: logging.getLogger("fish_speech").warning(msg.rstrip()), level="WARNING")
    except ImportError:  # pragma: no cover - loguru is locked
        pass
    # Fish Speech's codec builds weight-normed convs with the deprecated API; the warning is not actionable.
    warnings.filterwarnings("ignore", message=r".*torch.nn.utils.weight_norm.*", category=FutureWarning)
    for noisy in ("matplotlib", "numba", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def quiet_lightning() -> None:
    """Call after importing lightning: it sets its loggers to INFO with a handler of its own at import."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.WARNING)


def attach_stage_file(path: Path) -> logging.Handler:
    """Also log to ``path`` (a stage's ``RunLayout.log(stage)``) until :func:`detach`."""
    handler = _LineBufferedFileHandler(Path(path))
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    handler.addFilter(redact.RedactFilter())
    logging.getLogger().addHandler(handler)
    return handler


def detach(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
