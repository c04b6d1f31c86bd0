"""Stage ``evaluate``: is the voice good? Base model vs fine-tuned checkpoint(s), side by side, in a report.

Texts: the fixed test sentences (``configs/eval/<recipe>.txt`` or ``evaluate.sentences_file``: numbers,
abbreviations) and the transcripts of up to ``evaluate.heldout_clips`` held-out clips (``packed/split.json``),
whose recordings are the references. Every system (the base model, then each of ``evaluate.checkpoints`` folded
into it) synthesises every text with the same seeds and generation settings as ``synthesize``. Per sample and
averaged: CER from Whisper (skipped with a note when ``evaluate.asr_model`` is absent), speaker similarity to the
held-out clips (resemblyzer), duration and silence ratios; per system the validation loss on the held-out split.

Outputs (``evaluate.output``, default ``report/``; the folder is replaced as a whole): ``index.html``
(self-contained), ``report.json``, ``audio/<system>/<id>.wav``, ``best_checkpoint.json`` (the pick by
:mod:`fishtune.evaluation.pick`'s rule, used by ``merge checkpoint=best``). Rerunning with the same inputs and
settings is a no-op.

The work is in :mod:`fishtune.evaluation` (:mod:`~fishtune.evaluation.plan`, :mod:`~fishtune.evaluation.scoring`,
:mod:`~fishtune.evaluation.report`); this module puts it in order.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from omegaconf import DictConfig

from fishtune import devices
from fishtune.evaluation import asr, plan, scoring
from fishtune.evaluation import report as report_mod
from fishtune.layout import RunLayout
from fishtune.progress import Progress
from fishtune.results import StageResult
from fishtune.runstate import RunState, atomic_dir, check_replaceable, clean_leftovers

log = logging.getLogger("fishtune.evaluate")


def _f(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _log_plan(systems: list[plan.System], items: list[plan.Item], device) -> None:
    log.info(
        "evaluating %s on %d texts (%d test sentences, %d held-out clips) on %s",
        ", ".join(s.name for s in systems),
        len(items),
        sum(i.kind == "sentence" for i in items),
        sum(i.kind == "heldout" for i in items),
        device,
    )


def _log_report(report: dict, notes: list[str], run: RunLayout) -> None:
    for s in report["systems"]:
        m = s["metrics"]
        log.info(
            "evaluate: %-12s CER %s  similarity %s  duration ratio %s  silence ratio %s  val loss %s%s",
            s["name"],
            _f(m["cer"]),
            _f(m["similarity"]),
            _f(m["duration_ratio"]),
            _f(m["silence_ratio"]),
            _f(m["val_loss"]),
            f"  ({m['flagged']} flagged)" if m["flagged"] else "",
        )
    best = report["best_checkpoint"]
    if best:
        log.info("evaluate: best checkpoint %s (%s)", best["checkpoint"], best["reason"])
    for note in notes:
        log.warning("evaluate: %s", note)
    log.info("evaluate: report %s", run.report_html)


def _evaluate(cfg: DictConfig, run: RunLayout, items, systems, device, notes: list[str], cps: float) -> dict:
    """Synthesise, score and write the report folder (replaced as a whole); returns the report."""
    clean_leftovers(run.report)  # temp folders of a killed evaluation
    with atomic_dir(run.report, what="evaluate.output folder") as tmp:
        progress = Progress("evaluate", len(systems) * len(items), unit="samples", amount_unit="audio s", logger=log)
        results, losses = scoring.synthesize_all(cfg, systems, items, tmp, device, progress)
        progress.close()
        scored = scoring.score(cfg, items, results, tmp, device, notes)
        report = report_mod.build(cfg, items, systems, losses, scored, notes, cps)
        report_mod.write(tmp, run, report, systems, bool(cfg.evaluate.embed_audio))
    return report


def run(cfg: DictConfig) -> StageResult:
    if not sys.stdout.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.time()
    run = RunLayout.of(cfg)
    check_replaceable(run.report, "evaluate.output folder")  # before any work
    device = devices.pick(str(cfg.evaluate.device))
    notes: list[str] = []
    items, cps = plan.build_items(cfg, run, notes)
    systems = plan.plan_systems(cfg)
    fp = plan.fingerprint(cfg, items, systems, asr.unavailable_reason(cfg.evaluate.asr_model))
    state = RunState(run)
    page = run.relative(run.report_html)
    if state.is_current("evaluate", fp) and run.report_html.is_file() and run.report_json.is_file():
        log.info("evaluate: up to date (same models, texts and settings): %s", run.report_html)
        return StageResult(f"{page} (up to date)", skipped=True, data={"report": str(run.report_html)})

    _log_plan(systems, items, device)
    report = _evaluate(cfg, run, items, systems, device, notes, cps)
    _log_report(report, notes, run)
    best = report["best_checkpoint"]
    state.record(
        "evaluate",
        fingerprint=fp,
        started=started,
        report=str(run.report_html),
        best_checkpoint=(best or {}).get("checkpoint"),
    )
    data = {
        "report": str(run.report_html),
        "systems": {s["name"]: s["metrics"] for s in report["systems"]},
        "best_checkpoint": best,
    }
    return StageResult(f"{page}" + (f" (best checkpoint: {best['name']})" if best else ""), data=data)
