"""Clips -> VQ token files with the codec encoder: length-sorted batches planned once per run, OOM back-off, and
one process per device.

- :func:`plan_batches` sorts the clips by duration and groups them so that a batch's padded audio
  (``len(batch) * longest``) stays under ``max_seconds`` and its size under ``max_clips``: padding waste is small
  and memory is bounded by seconds of audio, not a clip count. The plan is made once per run (O(n log n)).
- :class:`Extractor`: a CUDA out-of-memory error halves the batch and retries and lowers the limit for the
  rest of the run (:func:`iter_batches` splits each batch still pending to the lowered limit); only a single
  clip that does not fit fails.
- :class:`EncodeJob`: worker ``i`` of ``n`` encodes the planned batches ``i, i+n, …`` (on ``cuda:i``, or the
  CPU), so each batch is the one a single process would encode and the token files are identical whatever
  ``n`` is. Each token file is written atomically by the worker that encoded it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

import numpy as np
import torch

from fishtune import audio, devices, tokens
from fishtune.errors import FishtuneError, InputError, StageFailed, UsageError

log = logging.getLogger("fishtune.extract")


def plan_batches(rows: list[dict], max_seconds: float, max_clips: int) -> list[list[dict]]:
    """Group rows, sorted by (duration, id), so that ``len(batch) * longest <= max_seconds`` and ``<= max_clips``
    (a single clip longer than ``max_seconds`` makes a batch of its own)."""
    batches: list[list[dict]] = []
    current: list[dict] = []
    for row in sorted(rows, key=lambda r: (r["duration"], r["id"])):
        longest = row["duration"]  # sorted: the newcomer is the longest
        if current and (len(current) + 1 > max_clips or (len(current) + 1) * longest > max_seconds):
            batches.append(current)
            current = []
        current.append(row)
    if current:
        batches.append(current)
    return batches


class Extractor:
    """Encodes batches with OOM back-off. ``encode_fn(waves) -> list of code arrays``."""

    def __init__(self, encode_fn: Callable[[list[torch.Tensor]], list[torch.Tensor]]):
        self.encode_fn = encode_fn
        self.oom_events = 0
        self.limit_scale = 1.0  # multiplies max_batch_seconds after an OOM

    def encode(self, waves: list[torch.Tensor], ids: list[str]) -> list[torch.Tensor]:
        try:
            return self.encode_fn(waves)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not devices.is_oom(err):
                raise
            devices.empty_cache()
            self.oom_events += 1
            if len(waves) == 1:
                raise StageFailed(
                    f"out of GPU memory encoding a single clip {ids[0]} ({waves[0].numel()} samples)",
                    hint="lower prepare.max_duration and rerun prepare, or use extract.device=cpu",
                ) from err
            self.limit_scale = max(self.limit_scale / 2, 1e-3)
            half = len(waves) // 2
            log.warning(
                "out of memory on a batch of %d clips: retrying as %d + %d (batch limit now x%.3g)",
                len(waves),
                half,
                len(waves) - half,
                self.limit_scale,
            )
            return self.encode(waves[:half], ids[:half]) + self.encode(waves[half:], ids[half:])


def iter_batches(
    rows: list[dict], max_seconds: float, max_clips: int, extractor: Extractor, part: tuple[int, int] = (0, 1)
) -> Iterator[list[dict]]:
    """The batches to encode: planned once; worker ``part = (i, n)`` takes batches ``i, i+n, …``. After an OOM
    (``extractor.limit_scale`` < 1) each batch still pending is split to the lowered limit before it runs."""
    worker, workers = part
    for planned in plan_batches(rows, max_seconds, max_clips)[worker::workers]:
        pending = planned
        while pending:
            batch = pending
            if extractor.limit_scale < 1:
                batch = plan_batches(pending, max_seconds * extractor.limit_scale, max_clips)[0]
            pending = pending[len(batch) :]  # a batch is a prefix of the sorted pending rows
            yield batch


def worker_devices(device: torch.device, count) -> list[torch.device]:
    """One device per encoding process for ``extract.devices`` (``auto``: every visible GPU, one on the CPU;
    ``N`` CPU processes share the cores)."""
    auto = str(count) == "auto"
    if device.type == "cuda" and device.index is not None:
        if not auto and int(count) != 1:
            raise UsageError(f"extract.device={device} names one GPU but extract.devices={count}",
                             hint="use extract.device=cuda with extract.devices=N")  # fmt: skip
        return [device]
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        n = visible if auto else int(count)
        if n > visible:
            raise UsageError(f"extract.devices={n} but {visible} GPU(s) are visible", hint="use extract.devices=auto")
        return [torch.device("cuda", i) for i in range(n)]
    return [device] * (1 if auto else int(count))


def load_clip(path: Path, sample_rate: int) -> torch.Tensor:
    samples, sr = audio.read_wav(path)
    if sr != sample_rate:
        raise InputError(
            f"clip {path} is {sr} Hz but the codec needs {sample_rate} Hz",
            hint=f"rerun prepare with prepare.sample_rate={sample_rate}",
        )
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))


@dataclass(frozen=True)
class EncodeJob:
    """Everything a worker needs (plain values: it crosses to a spawned process)."""

    model_path: str
    clips: Path
    tokens: Path
    dtype: torch.dtype
    max_seconds: float
    max_clips: int
    codec_sha: str
    audio_sha: dict[str, str]

    def encode(self, rows: list[dict], device: torch.device, part=(0, 1), done: Callable | None = None) -> int:
        """Encode this worker's share of ``rows``; ``done(clips, audio_seconds)`` after each batch. Returns the
        number of OOM back-offs."""
        from fishtune.modeling import codec as codec_mod

        model = codec_mod.load_codec(self.model_path, device=device)
        sr = int(model.sample_rate)
        extractor = Extractor(lambda waves: codec_mod.encode(model, waves, device, self.dtype))
        for batch in iter_batches(rows, self.max_seconds, self.max_clips, extractor, part):
            waves = [load_clip(self.clips / r["path"], sr) for r in batch]
            codes = extractor.encode(waves, [r["id"] for r in batch])
            for row, c in zip(batch, codes, strict=True):
                meta = {"audio_sha256": self.audio_sha[row["id"]], "codec_sha256": self.codec_sha, "id": row["id"]}
                tokens.save(self.tokens, row["id"], c.numpy(), meta)
            if done is not None:
                done(len(batch), sum(r["duration"] for r in batch))
        return extractor.oom_events


def _worker(job: EncodeJob, rows: list[dict], device: torch.device, part: tuple[int, int], threads: int, queue):
    """A spawned encoding process: reports ``("done", clips, seconds)`` per batch, then ``("end", ooms)`` or
    ``("error", one line)``."""
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        ooms = job.encode(rows, device, part, lambda n, s: queue.put(("done", n, s)))
        queue.put(("end", ooms))
    except FishtuneError as err:
        queue.put(("error", err.one_line()))
    except Exception as err:  # noqa: BLE001 - reported as one line by the parent
        queue.put(("error", f"{type(err).__name__}: {err}".splitlines()[0]))


def encode_all(job: EncodeJob, rows: list[dict], workers: list[torch.device], progress) -> int:
    """Encode ``rows`` on ``workers`` (one process each; in this process when there is one). Returns the OOM
    back-offs; a failed worker fails the stage with its error (the others' finished files stay: a rerun skips
    them)."""
    done = lambda n, s: progress.update(n, amount=s)  # noqa: E731
    if len(workers) == 1:
        return job.encode(rows, workers[0], (0, 1), done)
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    queue = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // len(workers))
    procs = [ctx.Process(target=_worker, args=(job, rows, d, (i, len(workers)), threads, queue), daemon=True)
             for i, d in enumerate(workers)]  # fmt: skip
    for p in procs:
        p.start()
    ooms, ended, errors = 0, 0, []
    try:
        while ended < len(procs):
            try:
                msg = queue.get(timeout=5)
            except Empty:  # check that nobody died silently (killed, a segfault)
                dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    raise StageFailed(f"extraction worker {dead[0]} died (exit code {procs[dead[0]].exitcode})",
                                      hint="rerun extract: finished clips are kept") from None  # fmt: skip
                continue
            if msg[0] == "done":
                done(msg[1], msg[2])
            else:
                ended += 1
                ooms += msg[1] if msg[0] == "end" else 0
                errors += [msg[1]] if msg[0] == "error" else []
    finally:  # an error or an interrupt (Ctrl-C, SIGTERM) stops the other workers at once; finished files stay
        for p in procs:
            if errors or ended < len(procs):
                p.terminate()
            p.join(timeout=30)
    if errors:
        raise StageFailed(f"extraction failed in a worker: {errors[0]}", hint="rerun extract: finished clips are kept")
    return ooms
