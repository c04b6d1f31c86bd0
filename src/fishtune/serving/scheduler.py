"""A bounded queue in front of the single model: one worker thread, at most ``max_pending`` requests waiting
or running (more are refused at once with a retry hint), and a deadline per request.

A request past its deadline is answered at once; its work stops too: before it starts if it is still waiting,
otherwise at the next generated frame (the ``should_stop`` hook of :func:`fishtune.generation.generate_codes`).
A slot is freed only when the worker is really done with it, so the bound holds for work, not just for replies.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Busy(Exception):
    """The queue is full; ``retry_after`` seconds is a fair guess of when a slot frees."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy ({retry_after} s)")
        self.retry_after = retry_after


class TimedOut(Exception):
    """The request waited and ran longer than the per-request timeout."""


class Scheduler:
    def __init__(self, max_pending: int, timeout: float):
        self.max_pending = max(1, int(max_pending))
        self.timeout = float(timeout)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fishtune-model")
        self._lock = threading.Lock()
        self.pending = 0
        self.stats = {"done": 0, "failed": 0, "busy": 0, "timed_out": 0, "busy_seconds": 0.0}
        self._mean_seconds = 5.0  # until the first request has been measured

    def retry_after(self) -> int:
        return max(1, math.ceil(self._mean_seconds * self.pending))

    def admit(self) -> None:
        """Take a slot or raise :class:`Busy`; every admitted request must then be given to :meth:`execute`."""
        with self._lock:
            if self.pending >= self.max_pending:
                self.stats["busy"] += 1
                raise Busy(self.retry_after())
            self.pending += 1

    async def run(self, work: Callable[[Callable[[], bool]], Any]) -> Any:
        """:meth:`admit`, then :meth:`execute`."""
        self.admit()
        return await self.execute(work)

    async def execute(self, work: Callable[[Callable[[], bool]], Any]) -> Any:
        """Run ``work(should_stop)`` on the model thread (slot taken by :meth:`admit`); may raise :class:`TimedOut`."""
        stop = threading.Event()
        deadline = time.monotonic() + self.timeout

        def should_stop() -> bool:
            return stop.is_set() or time.monotonic() > deadline

        def job() -> Any:
            started = time.monotonic()
            try:
                if should_stop():
                    raise TimedOut("timed out while waiting in the queue")
                result = work(should_stop)
                self.stats["done"] += 1
                return result
            except TimedOut:
                raise
            except BaseException as err:
                if time.monotonic() > deadline:  # stopped by the deadline (generation.Stopped), not a failure
                    raise TimedOut(f"no answer within {self.timeout:g} s") from err
                self.stats["failed"] += 1
                raise
            finally:
                spent = time.monotonic() - started
                with self._lock:
                    self.pending -= 1
                    self.stats["busy_seconds"] += spent
                    self._mean_seconds = 0.7 * self._mean_seconds + 0.3 * spent if spent > 0.01 else self._mean_seconds

        future = asyncio.get_running_loop().run_in_executor(self._pool, job)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=self.timeout)
        except TimeoutError as err:
            stop.set()
            future.add_done_callback(_retrieve)
            self.stats["timed_out"] += 1
            raise TimedOut(f"no answer within {self.timeout:g} s") from err
        except TimedOut:
            self.stats["timed_out"] += 1
            raise
        except asyncio.CancelledError:  # the client went away: stop the work it asked for
            stop.set()
            future.add_done_callback(_retrieve)
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _retrieve(future: asyncio.Future) -> None:
    """Read the outcome of work nobody waits for any more (asyncio would log it as never retrieved)."""
    if not future.cancelled():
        future.exception()
