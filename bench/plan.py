"""Extraction batch planning: time to plan the length-sorted batches of n clips, before and after planning once.

    python -m bench.plan                              # 2k, 8k and 32k clips (make bench)
    python -m bench.plan --clips 2000,8000 --before-max 8000

``before`` is the planner the extract stage used until #16, kept here only as the reference: it re-planned every
pending clip before each batch (so a back-off after an OOM applied to all of them), O(n^2 / batch). ``after`` is
:func:`fishtune.extraction.iter_batches`: one plan per run, and after an OOM only the pending batches are split.
Both must yield the same batches when nothing runs out of memory. Durations are recipe-like (mean 7.2 s); no
codec runs. Reports seconds and microseconds per clip: ``after`` should stay flat per clip as n grows.
"""

from __future__ import annotations

import argparse
import time

from bench import common
from fishtune.extraction import Extractor, iter_batches


def old_plan_batches(rows: list[dict], max_seconds: float, max_clips: int) -> list[list[dict]]:
    """The pre-#16 grouping (reference only): the longest clip recomputed over the batch for every row."""
    batches: list[list[dict]] = []
    current: list[dict] = []
    for row in sorted(rows, key=lambda r: (r["duration"], r["id"])):
        longest = max([row["duration"]] + [r["duration"] for r in current])
        if current and (len(current) + 1 > max_clips or (len(current) + 1) * longest > max_seconds):
            batches.append(current)
            current = []
        current.append(row)
    if current:
        batches.append(current)
    return batches


def replan_each_batch(rows: list[dict], max_seconds: float, max_clips: int, extractor: Extractor):
    """The pre-#16 planner (reference only): every pending clip planned again before each batch."""
    pending = rows
    while pending:
        batch = old_plan_batches(pending, max_seconds * extractor.limit_scale, max_clips)[0]
        done_ids = {r["id"] for r in batch}
        pending = [r for r in pending if r["id"] not in done_ids]
        yield batch


def timed(planner, rows, max_seconds, max_clips, repeat: int = 1) -> tuple[float, list]:
    """The best of ``repeat`` runs (seconds) and the batches."""
    best = float("inf")
    for _ in range(repeat):
        ex = Extractor(lambda waves: waves)
        t0 = time.perf_counter()
        batches = list(planner(rows, max_seconds, max_clips, ex))
        best = min(best, time.perf_counter() - t0)
    return best, batches


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="extraction batch planning benchmark")
    ap.add_argument("--clips", default="2000,8000,32000", help="comma list of clip counts")
    ap.add_argument("--before-max", type=int, default=32000, help="skip the quadratic reference above this count")
    ap.add_argument("--max-batch-seconds", type=float, default=240.0)
    ap.add_argument("--max-batch-clips", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    result: dict = {"benchmark": "plan", "max_batch_seconds": args.max_batch_seconds, "sizes": []}
    for n in [int(c) for c in args.clips.split(",") if c]:
        rows = [{"id": f"s/c{i:06d}", "duration": d} for i, d in enumerate(common.recipe_durations(n))]
        after_s, after = timed(iter_batches, rows, args.max_batch_seconds, args.max_batch_clips, repeat=5)
        row = {"clips": n, "batches": len(after), "after_seconds": round(after_s, 4),
               "after_us_per_clip": round(after_s / n * 1e6, 2)}  # fmt: skip
        if n <= args.before_max:
            before_s, before = timed(replan_each_batch, rows, args.max_batch_seconds, args.max_batch_clips)
            row |= {"before_seconds": round(before_s, 3), "before_us_per_clip": round(before_s / n * 1e6, 1),
                    "same_batches": before == after, "speedup": round(before_s / after_s, 1)}  # fmt: skip
        result["sizes"].append(row)
    common.write_json(result, args.out, "plan")
    return result


if __name__ == "__main__":
    main()
