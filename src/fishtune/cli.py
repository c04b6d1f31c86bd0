"""Command line: ``fishtune <stage> [overrides]`` or ``STAGE=<stage> fishtune [overrides]``.

Exit codes: 0 success, 1 a stage failed (one-line reason printed), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from fishtune import distributed, logs, redact, runlock, stages, status
from fishtune.errors import FishtuneError, UsageError
from fishtune.layout import RunLayout
from fishtune.results import StageResult

log = logging.getLogger("fishtune")

ENV_HELP = [
    ("STAGE", "stage to run when none is given as the first argument"),
    ("FISHTUNE_DATA", "input dataset folder (default /data)"),
    ("FISHTUNE_RUNS", "output root (default /runs); the run goes to $FISHTUNE_RUNS/$RUN_NAME"),
    ("RUN_NAME", "name of this run (default 'default')"),
    ("FISHTUNE_CACHE", "downloads and caches (default /cache)"),
    ("FISHTUNE_MODEL", "base model folder (default $FISHTUNE_CACHE/models/<model>)"),
    ("FISHTUNE_CONFIGS", "configs folder (default: the one shipped with fishtune)"),
    ("HF_TOKEN", "Hugging Face token for fetch, hub sync and publish (never logged)"),
    ("HF_TOKEN_FILE", "file holding the token instead, e.g. a mounted secret (default /run/secrets/hf_token)"),
    ("GPU_HOURLY_USD", "price of the machine per hour: status.json and the summary show the estimated cost"),
    ("SERVE_TOKEN", "STAGE=serve: the token API calls must send (required off loopback; never logged)"),
    ("SERVE_HOST", "STAGE=serve: address to listen on (default 127.0.0.1; the image sets 0.0.0.0)"),
    ("SERVE_PORT", "STAGE=serve: port (default 8080)"),
    ("SERVE_AFTER", "true: after the stages (e.g. STAGE=all), serve the model until stopped"),
    ("FISHTUNE_DATASET_REPO", "a Hub dataset repo for fetch (fetch.dataset.repo_id)"),
]


def usage() -> str:
    width = max(len(n) for n in [*stages.STAGES, "all"])
    lines = [
        "usage: python entrypoint.py <stage>[,<stage>...] [hydra overrides...]",
        "       STAGE=<stage> python entrypoint.py [hydra overrides...]",
        "",
        "stages:",
    ]
    for name, (_, desc) in stages.STAGES.items():
        lines.append(f"  {name:<{width}}  {desc}")
    lines.append(f"  {'all':<{width}}  run {' -> '.join(stages.CHAIN)}")
    lines += ["", "overrides: key=value (e.g. model=tiny prepare.max_duration=20 recipe=generic)", "", "env:"]
    env_width = max(len(k) for k, _ in ENV_HELP)
    lines += [f"  {k:<{env_width}} {v}" for k, v in ENV_HELP]
    return "\n".join(lines)


def parse(argv: list[str]) -> tuple[list[str], list[str]]:
    """-> (the stages to run, ``all`` expanded to the chain; the Hydra overrides)."""
    args = list(argv)
    if any(a in ("-h", "--help", "help") for a in args[:1]) or (not args and not os.environ.get("STAGE")):
        if not args and not os.environ.get("STAGE"):
            raise UsageError("no stage given", hint=f"name one: {', '.join([*stages.STAGES, 'all'])}")
        print(usage())
        raise SystemExit(0)
    if args and "=" not in args[0] and not args[0].startswith("-"):
        stage = args.pop(0)
    else:
        stage = os.environ["STAGE"] if os.environ.get("STAGE") else ""
    names = [stages.resolve(s.strip().lower()) for s in stage.split(",") if s.strip()] or [""]
    for name in names:
        if name != "all" and name not in stages.STAGES:
            raise UsageError(
                f"unknown stage '{name}'",
                hint=f"use one of: {', '.join([*stages.STAGES, 'all'])} (python entrypoint.py --help)",
            )
    return [n for name in names for n in (stages.CHAIN if name == "all" else [name])], args


def _append(run: RunLayout, stage: str, text: str) -> None:
    try:
        with open(run.log(stage), "a", encoding="utf-8") as fh:
            fh.write(redact.redact(text))
    except OSError:  # the one line on stderr still says what happened
        pass


def _attach_log(run: RunLayout, stage: str):
    """The stage's log file; a run folder that cannot be written is one line, like every other error."""
    try:
        return logs.attach_stage_file(run.log(stage))
    except OSError as err:
        where = err.filename or run.logs
        raise FishtuneError(
            f"cannot write the log of stage {stage} in {where}: {err.strerror or err}",
            hint="make the runs folder writable, or point FISHTUNE_RUNS (paths.runs) at a writable folder",
        ) from err


def _disk_full(err: BaseException, run_dir: Path | None = None) -> FishtuneError | None:
    """ENOSPC anywhere in a stage -> one clear line. Libraries that hide it (libsndfile's "System error",
    torch's zip writer) are recognised by the errno in the exception chain, the message, or a full run disk."""
    chain, e = [], err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    nospc = [x for x in chain if isinstance(x, OSError) and x.errno == errno.ENOSPC]
    said = any("no space left on device" in str(x).lower() for x in chain)
    if not (nospc or said or (run_dir is not None and _free_bytes(run_dir) < 1 << 20)):
        return None
    where = f" writing {nospc[0].filename}" if nospc and nospc[0].filename else ""
    return FishtuneError(
        f"no space left on the device{where}",
        hint="free disk space (or mount a bigger volume at /runs), then rerun the same command: "
        "finished work is kept and the stage resumes",
    )


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 1 << 62


OOM_HINTS = {
    "train": "lower train.batch_size (raise train.accumulate to keep the effective batch) or train.max_length, or "
    "set train.gradient_checkpointing=true; checkpoints are kept and rerunning resumes",
    "extract": "lower extract.max_batch_seconds and extract.max_batch_clips; finished clips are cached and rerunning "
    "resumes",
}


def _out_of_memory(err: BaseException, stage: str) -> FishtuneError | None:
    """CUDA out of memory (past any back-off the stage has) or a failed CPU allocation -> one clear line."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        what = "the GPU ran out of memory"
    elif isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err)):
        what = "the machine ran out of memory (RAM)"
    else:
        return None
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    hint = OOM_HINTS.get(stage, "free memory or use a machine with more, then rerun the same command")
    return FishtuneError(f"{what} in stage {stage}: {first[:200]}", hint=hint)


_received: list[str] = []  # the signal that stopped this command (SIGTERM, SIGINT), once one came


def _on_signal(signum: int, _frame) -> None:
    """SIGTERM (docker stop, an orchestrator) and SIGINT (Ctrl-C) stop every stage the same way: as an interrupt.
    Lightning turns the KeyboardInterrupt into ``sys.exit(1)`` and ignores SIGTERM on its own; :data:`_received`
    lets :func:`main` still answer 130 "interrupted"."""
    _received.append(signal.Signals(signum).name)
    raise KeyboardInterrupt


def _interrupted(err: BaseException | None) -> bool:
    return isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and bool(_received))


def run_stage(name: str, cfg) -> StageResult:
    run = RunLayout.of(cfg)
    handler = _attach_log(run, name)
    started = time.time()
    result = None
    runlock.stage_started(name)
    status.stage_started(run, name)
    try:
        log.info("stage %s: starting (run %s)", name, run.root)
        result = status.as_result(name, stages.load(name).run(cfg))
        seconds = time.time() - started
        log.info("stage %s: done in %.1f s; cost %s", name, seconds, status.cost_text(seconds))
        return result
    except FishtuneError as err:
        _append(run, name, f"error: {err.one_line()}\n")
        raise
    except Exception as err:
        known = _disk_full(err, run.root) or _out_of_memory(err, name)
        if known is not None:
            _append(run, name, traceback.format_exc() + f"error: {known.one_line()}\n")
            raise known from err
        # Unexpected: one line on stderr, the traceback in the stage log for a bug report.
        _append(run, name, traceback.format_exc())
        raise FishtuneError(
            f"stage {name} crashed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            hint=f"full traceback in {run.log(name)}; please report it",
        ) from err
    finally:
        err = sys.exc_info()[1]
        status.stage_finished(name, result, KeyboardInterrupt() if _interrupted(err) else err)
        logs.detach(handler)


def run_worker_stage(name: str, cfg) -> None:
    """A stage on a DDP rank other than zero: the same one-line errors as :func:`run_stage` (out of memory, disk
    full, a crash named with its rank), without touching the lock, status.json or the stage log (rank zero's)."""
    try:
        stages.load(name).run(cfg)
    except FishtuneError:
        raise
    except Exception as err:
        rank = distributed.global_rank()
        known = _disk_full(err, RunLayout.of(cfg).root) or _out_of_memory(err, name)
        if known is not None:
            raise known from err
        traceback.print_exc()
        first = str(err).splitlines()[0] if str(err) else ""
        raise FishtuneError(
            f"stage {name} crashed on rank {rank}: {type(err).__name__}: {first}",
            hint="the traceback is printed above; please report it",
        ) from err


def run_stages(names: list[str], cfg) -> None:
    """Run ``names`` in order; then status.json says how it ended and, for several stages, the summary."""
    ok = interrupted = False
    try:
        for name in names:
            run_stage(name, cfg)
        ok = True
    except (KeyboardInterrupt, SystemExit) as err:
        interrupted = _interrupted(err)
        raise
    finally:
        status.end(ok, interrupted)
        if len(names) > 1:  # STAGE=all or a list: the per-stage table, cost and next steps
            status.summary(RunLayout.of(cfg), ok)


def main(argv: list[str] | None = None) -> int:
    _received.clear()
    main_thread = threading.current_thread() is threading.main_thread()  # handlers can only be set there
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        return _main(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    logs.setup()
    try:
        names, overrides = parse(sys.argv[1:] if argv is None else argv)
        from fishtune.config import load_config

        cfg = load_config(overrides)
        names = distributed.stages_for_this_process(names)
        if not distributed.is_rank_zero():  # a DDP worker: no lock, status.json or stage log (rank zero's)
            for name in names:
                run_worker_stage(name, cfg)
            return 0
        # Stay-up mode (launchables): serve.after=true serves the result once the stages are done.
        stay_up = bool(cfg.serve.after) and "serve" not in names
        run = RunLayout.of(cfg)
        with runlock.hold(run, names):  # one writer per run directory; before status.json is touched
            status.begin(run, names)
            run_stages(names, cfg)
        if stay_up:
            log.info("serve.after=true: the stages are done; serving the model until stopped")
            run_stages(["serve"], cfg)
        return 0
    except FishtuneError as err:
        sys.stdout.flush()
        for line in err.lines():
            print(f"error: {redact.redact(line)}", file=sys.stderr, flush=True)
        return err.exit_code
    except (KeyboardInterrupt, SystemExit) as err:
        if not _interrupted(err):
            raise
        by = f" by {_received[0]}" if _received else ""
        print(f"error: interrupted{by}; rerun the same command to resume", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
