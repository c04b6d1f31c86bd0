"""Progress with rate and ETA: a tqdm bar on a terminal, plain log lines otherwise (CI, ``docker logs``).

Every update also reaches ``status.json`` (:mod:`fishtune.status`, throttled): items done, total, rate, ETA.
"""

from __future__ import annotations

import logging
import sys
import time

from fishtune import status
from fishtune.status import format_seconds  # also imported from here (training callbacks)


class Progress:
    """Counts work items (and optionally a second quantity such as audio seconds) and reports them.

    ``update(n, amount=...)`` advances; a line is logged at most every ``every`` seconds and at the end.
    ``start`` is where a resumed run begins (the rate counts only new work); ``lines=False`` keeps the tty bar
    and the status updates but logs no plain lines (for work that logs its own, like training steps).
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "items",
        amount_unit: str | None = None,
        logger: logging.Logger | None = None,
        every: float = 10.0,
        force_plain: bool | None = None,
        start: int = 0,
        lines: bool = True,
    ):
        self.label, self.total, self.unit, self.amount_unit = label, total, unit, amount_unit
        self.log = logger or logging.getLogger(f"fishtune.{label}")
        self.every = every
        self.lines = lines
        self.start = start
        self.done = start
        self.amount = 0.0
        self.started = time.monotonic()
        self._last = 0.0
        self._logged_at = -1
        plain = (not sys.stdout.isatty()) if force_plain is None else force_plain
        self._bar = None
        if not plain:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, desc=label, unit=unit, dynamic_ncols=True, leave=True)
        self._status(force=True)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else None

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        parts = [f"{self.label}: {self.done}/{self.total} {self.unit}", f"{self.rate():.2f} {self.unit}/s"]
        if self.amount_unit and elapsed > 0:
            parts.append(f"{self.amount / elapsed:.1f} {self.amount_unit}/s")
        eta = self.eta()
        parts.append(f"elapsed {format_seconds(elapsed)}")
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {format_seconds(eta)}")
        return ", ".join(parts)

    def _status(self, force: bool = False) -> None:
        status.progress(self.label, self.done, self.total, self.unit, self.rate(), self.eta(), force=force)

    def update(self, n: int = 1, amount: float = 0.0) -> None:
        self.done += n
        self.amount += amount
        self._status()
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self.lines and now - self._last >= self.every:
            self._last = now
            self._logged_at = self.done
            self.log.info(self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._status(force=True)
        if self.lines and self._logged_at != self.done:
            self.log.info(self.line())
