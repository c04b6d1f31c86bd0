"""Naming the best checkpoint by a stated rule, and handing the pick to ``merge.checkpoint=best``.

The rule: among the evaluated adapters whose mean speaker similarity is at least ``evaluate.pick.min_similarity``,
the one with the lowest mean CER; without CER (no ASR model) the lowest validation loss among them; when none
reaches the threshold, the one with the highest similarity. Ties go to the lower validation loss, then to the
order of ``evaluate.checkpoints``.

``report/best_checkpoint.json`` records the pick with the adapter file's sha256; ``merge`` uses it only while
that file is unchanged (a retrained run makes it stale and ``best`` falls back to the lowest val loss).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from fishtune.layout import RunLayout
from fishtune.runstate import sha256_file

log = logging.getLogger("fishtune.evaluate")


def rule_text(min_similarity: float) -> str:
    return (
        f"lowest mean CER among checkpoints with mean speaker similarity >= {min_similarity:g}; without CER the "
        "lowest validation loss among them; if none reaches the similarity threshold, the highest similarity"
    )


def _num(v) -> float:
    return math.inf if v is None else float(v)


def choose(candidates: list[dict], min_similarity: float) -> tuple[dict, str]:
    """``candidates``: dicts with ``name``, ``cer``, ``similarity``, ``val_loss`` (any may be None).

    Returns (the chosen candidate, a one-line reason).
    """
    if not candidates:
        raise ValueError("no candidates")
    eligible = [c for c in candidates if c.get("similarity") is None or c["similarity"] >= min_similarity]
    if not eligible:
        best = max(candidates, key=lambda c: (c["similarity"], -_num(c.get("val_loss"))))  # ties: the first
        return best, (
            f"no checkpoint reached similarity {min_similarity:g}; {best['name']} has the highest "
            f"({best['similarity']:.3f})"
        )
    with_cer = [c for c in eligible if c.get("cer") is not None]
    if with_cer:
        best = min(with_cer, key=lambda c: (c["cer"], _num(c.get("val_loss"))))
        return best, f"{best['name']}: lowest CER ({best['cer']:.3f}) of {len(eligible)} eligible checkpoint(s)"
    best = min(eligible, key=lambda c: _num(c.get("val_loss")))
    loss = f"{best['val_loss']:.4f}" if best.get("val_loss") is not None else "n/a"
    return best, f"{best['name']}: no CER available; lowest validation loss ({loss}) of {len(eligible)} eligible"


def record(chosen: dict, reason: str, candidates: list[dict], min_similarity: float) -> dict:
    """The pick as ``best_checkpoint.json`` holds it (``chosen['checkpoint']``'s sha256 included)."""
    return {
        "name": chosen["name"],
        "checkpoint": chosen["checkpoint"],
        "sha256": sha256_file(chosen["checkpoint"]),
        "rule": rule_text(min_similarity),
        "reason": reason,
        "metrics": {k: chosen.get(k) for k in ("cer", "similarity", "val_loss")},
        "candidates": [
            {k: c.get(k) for k in ("name", "checkpoint", "cer", "similarity", "val_loss")} for c in candidates
        ],
    }


def evaluated_best(run: RunLayout) -> Path | None:
    """The checkpoint the last evaluation of ``run`` picked (``run.best_checkpoint``), if its file still has the
    recorded sha256; else None. This is how ``merge checkpoint=best`` reads evaluate's pick."""
    path = run.best_checkpoint
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        ckpt = Path(rec["checkpoint"])
        sha = rec["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring %s (%s): delete it or rerun evaluate", path, err)
        return None
    if not ckpt.is_file() or sha256_file(ckpt) != sha:
        log.warning("%s names %s, which changed or is gone since the evaluation: not using it", path, ckpt)
        return None
    log.info("checkpoint=best: using the evaluation's pick %s (%s)", ckpt, rec.get("reason", ""))
    return ckpt
