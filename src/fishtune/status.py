"""``<run_dir>/status.json``: a machine-readable picture of the run, rewritten atomically while it runs.

Written by :func:`fishtune.cli.run_stage` (stage start and end), by :class:`fishtune.progress.Progress` (items,
rate, ETA) and by the training callbacks (step, loss, tokens/s, GPU memory, ETA). Writes are throttled to one
every ``FISHTUNE_STATUS_INTERVAL`` seconds (default 5) except at stage boundaries and validations, and always
go through a temporary file + rename, so a reader (``watch cat status.json``, a dashboard, the Hub sync) never
sees half a file.

Cost is an estimate: wall-clock hours of the stages x ``GPU_HOURLY_USD`` (the machine's price per hour; the GPU
is billed while the container runs, busy or not). Without ``GPU_HOURLY_USD`` it is ``"unknown"``.

At the end of a multi-stage command (``STAGE=all``) :func:`summary` prints a table (per stage: state, time,
cost, outputs) and what to do next, and writes it to ``summary.json`` / ``summary.txt``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from fishtune import redact
from fishtune.layout import RunLayout
from fishtune.results import StageResult

log = logging.getLogger("fishtune.status")

UNKNOWN = "unknown"


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("FISHTUNE_STATUS_INTERVAL", "5")))
    except ValueError:
        return 5.0


_warned_rate = False


def hourly_rate() -> float | None:
    """``GPU_HOURLY_USD`` as a float, or None when unset (or not a number: warned once)."""
    global _warned_rate
    raw = os.environ.get("GPU_HOURLY_USD", "").strip().lstrip("$")
    if not raw:
        return None
    try:
        rate = float(raw)
        if rate < 0:
            raise ValueError
        return rate
    except ValueError:
        if not _warned_rate:
            log.warning("GPU_HOURLY_USD=%r is not a price per hour (e.g. 2.49): cost is unknown", raw)
            _warned_rate = True
        return None


def cost_usd(seconds: float) -> float | None:
    rate = hourly_rate()
    return None if rate is None else round(seconds / 3600 * rate, 4)


def cost_or_unknown(seconds: float) -> float | str:
    """:func:`cost_usd`, or ``"unknown"`` without a GPU price."""
    value = cost_usd(seconds)
    return UNKNOWN if value is None else value


def money(value: float | str | None) -> str:
    if value is None or value == UNKNOWN:
        return UNKNOWN
    return f"${value:.2f}" if value >= 0.995 else f"${value:.3f}"


def cost_text(seconds: float) -> str:
    """``$0.42 (0.17 h at $2.50/h)`` or ``unknown (set GPU_HOURLY_USD to the machine's price per hour)``."""
    rate = hourly_rate()
    if rate is None:
        return "unknown (set GPU_HOURLY_USD to the machine's price per hour)"
    return f"{money(cost_usd(seconds))} ({seconds / 3600:.2f} h at ${rate:g}/h)"


def gpu_memory_gb() -> float | None:
    """Peak GPU memory of this process, when torch has initialised CUDA (never initialises it)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    except Exception:  # pragma: no cover - a broken driver must not break status writing
        return None
    return None


class _Status:
    """The status of the current command. One per process (a command runs its stages one after another)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset(None, [])

    def reset(self, run: RunLayout | None, planned: list[str]) -> None:
        self.layout = run
        self.run_dir = run.root if run else None
        self.planned = list(planned)
        self.command_started = time.time()
        self.stage: str | None = None
        self.stage_started: float | None = None
        self.records: list[dict] = []
        self.progress: dict = {}
        self.train: dict = {}
        self.last_write = 0.0
        self.state = "running"
        self.stages: dict[str, dict] = {}
        if run is not None:
            try:
                old = json.loads(run.status.read_text(encoding="utf-8"))
                if isinstance(old.get("stages"), dict):
                    self.stages = old["stages"]  # earlier commands' stages stay in the picture
                    _mark_killed(self.stages, old.get("pid"))
            except (OSError, ValueError):
                pass

    # -- the document ---------------------------------------------------------------------------------------
    def document(self) -> dict:
        now = time.time()
        stage_s = now - self.stage_started if self.stage_started else 0.0
        command_s = now - self.command_started
        finished = sum(
            r.get("seconds", 0.0) for n, r in self.stages.items() if r.get("state") != "running" and n != self.stage
        )
        run_s = finished + (stage_s if self.stage else 0.0)
        rate = hourly_rate()

        return {
            "run": self.run_dir.name if self.run_dir else None,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "state": self.state,
            "stage": self.stage,
            "command": self.planned,
            "progress": self.progress,
            "train": self.train,
            "elapsed_seconds": {"stage": round(stage_s, 1), "command": round(command_s, 1), "run": round(run_s, 1)},
            "cost": {
                "gpu_hourly_usd": rate,
                "stage_usd": cost_or_unknown(stage_s),
                "command_usd": cost_or_unknown(command_s),
                "run_usd": cost_or_unknown(run_s),
                "note": "wall-clock hours x GPU_HOURLY_USD" if rate is not None else "set GPU_HOURLY_USD",
            },
            "gpu_memory_gb": self.train.get("gpu_memory_gb", gpu_memory_gb()),
            "stages": self.stages,
            "started_at": _iso(self.command_started),
            "updated_at": _iso(now),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def write(self, force: bool = False) -> None:
        if self.layout is None:
            return
        now = time.monotonic()
        if not force and now - self.last_write < interval():
            return
        with self.lock:
            self.last_write = now
            text = redact.redact(json.dumps(self.document(), indent=2, sort_keys=True, default=str) + "\n")
            try:
                from fishtune.runstate import write_text_atomic

                write_text_atomic(self.layout.status, text)
            except OSError as err:  # a full disk must not turn into a failed stage because of the status file
                log.debug("could not write %s: %s", self.layout.status, err)


_S = _Status()


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _mark_killed(stages: dict, pid: Any) -> None:
    """A stage an earlier command left "running" (it was killed with no chance to say so) is recorded "killed"."""
    for rec in stages.values():
        if isinstance(rec, dict) and rec.get("state") == "running":
            rec["state"] = "killed"
            rec["error"] = f"the command (pid {pid}) ended without finishing this stage (kill -9, OOM killer, power?)"


def read(run: RunLayout | str | os.PathLike) -> dict:
    """``status.json`` as a reader should see it: a "running" run whose process is gone (same host) is "killed"."""
    doc = json.loads(RunLayout.coerce(run).status.read_text(encoding="utf-8"))
    if doc.get("state") == "running" and doc.get("host") == socket.gethostname() and not _alive(doc.get("pid")):
        doc["state"] = "killed"
        _mark_killed(doc.get("stages") or {}, doc.get("pid"))
    return doc


# -- what the CLI calls ------------------------------------------------------------------------------------------
def begin(run: RunLayout | str | os.PathLike, planned: list[str]) -> None:
    """Start a command's picture of ``run`` (its :class:`RunLayout`, or a run folder with the default layout)."""
    with _S.lock:
        _S.reset(RunLayout.coerce(run), planned)
        _S.write(force=True)


def stage_started(run: RunLayout | str | os.PathLike, name: str) -> None:
    with _S.lock:
        run = RunLayout.coerce(run)
        if _S.layout is None or _S.run_dir != run.root:
            _S.reset(run, [name])
        _S.stage, _S.stage_started = name, time.time()
        _S.progress, _S.train, _S.state = {}, {}, "running"
        _S.stages[name] = {"state": "running", "started_at": _iso(_S.stage_started)}
        _S.write(force=True)


def stage_finished(name: str, result: StageResult | None = None, error: BaseException | None = None) -> dict:
    """Record the end of a stage (done / skipped / failed / interrupted) from the :class:`StageResult` its ``run``
    returned; returns the record."""
    result = as_result(name, result)
    with _S.lock:
        started = _S.stage_started or time.time()
        seconds = time.time() - started
        if error is None:
            state = "skipped" if result.skipped else "done"
        elif isinstance(error, KeyboardInterrupt):
            state = "interrupted"
        else:
            state = "failed"
        rec = {
            "stage": name,
            "state": state,
            "seconds": round(seconds, 2),
            "cost_usd": cost_or_unknown(seconds),
            "started_at": _iso(started),
            "finished_at": _iso(),
            "outputs": result.outputs if error is None else "",
        }
        if error is not None:
            msg = error.one_line() if hasattr(error, "one_line") else (str(error) or type(error).__name__)
            rec["error"] = redact.redact(msg.splitlines()[0] if msg else type(error).__name__)
        mem = gpu_memory_gb()
        if mem is not None:
            rec["gpu_memory_gb"] = mem
        if _S.train:  # the last training numbers stay in the record (loss, tokens/s, ...)
            rec["train"] = dict(_S.train)
        _S.records.append(rec)
        _S.stages[name] = {k: v for k, v in rec.items() if k != "stage"}
        _S.state = {"done": "running", "skipped": "running"}.get(state, state)
        _S.stage, _S.stage_started = None, None
        _S.write(force=True)
        return rec


def end(ok: bool, interrupted: bool = False) -> None:
    with _S.lock:
        _S.state = "done" if ok else ("interrupted" if interrupted else "failed")
        _S.stage, _S.stage_started, _S.progress = None, None, {}
        _S.write(force=True)


def due() -> bool:
    """True when a throttled update would be written now (lets callers skip computing it otherwise)."""
    return _S.layout is not None and time.monotonic() - _S.last_write >= interval()


def progress(
    label: str,
    done: int,
    total: int,
    unit: str,
    rate: float,
    eta: float | None,
    force: bool = False,
    **extra: Any,
) -> None:
    if _S.layout is None:
        return
    with _S.lock:  # the in-memory picture is always current; the file is rewritten at most every interval()
        _S.progress = {
            "label": label,
            "done": done,
            "total": total,
            "unit": unit,
            "percent": round(100.0 * done / total, 1) if total else 100.0,
            "rate_per_second": round(rate, 3),
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "eta": format_seconds(eta) if eta is not None else None,
            **extra,
        }
        _S.write(force=force)


def train(fields: dict, force: bool = False) -> None:
    """Training numbers (step, max_steps, loss, val_loss, tokens_per_second, gpu_memory_gb, eta_seconds, ...)."""
    if _S.layout is None:
        return
    with _S.lock:
        _S.train.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in fields.items()})
        _S.write(force=force)


def current() -> dict:
    with _S.lock:
        return _S.document()


def records() -> list[dict]:
    return list(_S.records)


def run_cost_text() -> str:
    """Estimated cost of the run so far (finished stages + the current one)."""
    return cost_text(current()["elapsed_seconds"]["run"])


# -- outputs and the final summary -------------------------------------------------------------------------------
def as_result(name: str, result: StageResult | None) -> StageResult:
    """The stage's :class:`StageResult` (``None``: a stage that returned nothing, e.g. a server that was stopped)."""
    if result is None:
        return StageResult("")
    if not isinstance(result, StageResult):
        raise TypeError(f"stage {name} returned {type(result).__name__}, not a StageResult")
    return result


def next_steps(run: RunLayout, recs: list[dict], ok: bool) -> list[str]:
    """What to do after the command: the failure to fix, else the run's outputs that exist."""
    failed = [r for r in recs if r["state"] in ("failed", "interrupted")]
    if failed:
        r = failed[-1]
        return [
            f"{r['stage']} {r['state']}: {r.get('error', '')}",
            "fix that, then rerun the same command: finished stages are skipped or resumed where they stopped",
            f"details: {run.log(r['stage'])}",
        ]
    steps = []
    if run.samples.is_dir():
        steps.append(f"listen to the samples: {run.samples}/*.wav (texts in index.jsonl)")
    if run.report_html.is_file():
        steps.append(f"read the report: {run.report_html}")
    if run.merged_model.is_file():
        steps.append(f"the fine-tuned model: {run.model} (Fish Speech layout; model card in README.md)")
    if run.tensorboard.is_dir():
        steps.append(f"training curves: tensorboard --logdir {run.tensorboard}")
    pub = {r["stage"]: r for r in recs}.get("publish")
    if pub is None or pub["state"] == "skipped":
        steps.append("publish: STAGE=publish publish.repo_id=<user>/<name> with HF_TOKEN (or HF_TOKEN_FILE) set")
    elif pub["state"] == "done":
        steps.append(f"published: {pub.get('outputs', '')}")
    if not steps:
        steps.append("run the next stage (python entrypoint.py --help lists them)")
    return steps


def render_table(recs: list[dict]) -> str:
    rows = [("stage", "state", "time", "cost", "outputs")]
    for r in recs:
        rows.append(
            (r["stage"], r["state"], format_seconds(r["seconds"]), money(r.get("cost_usd")), r.get("outputs", ""))
        )
    total_s = sum(r["seconds"] for r in recs)
    total_cost = cost_or_unknown(total_s)
    rows.append(("total", "", format_seconds(total_s), money(total_cost), ""))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        cells = [str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        lines.append("  ".join([*cells, str(row[4])]).rstrip())
        if i == 0 or i == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)


def summary(run: RunLayout | str | os.PathLike, ok: bool) -> dict:
    """Print the per-stage table and next steps; write ``summary.json`` and ``summary.txt``."""
    from fishtune.runstate import write_json_atomic, write_text_atomic

    run = RunLayout.coerce(run)
    run_dir = run.root
    recs = records()
    total_s = sum(r["seconds"] for r in recs)
    rate = hourly_rate()
    doc = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "ok": ok,
        "stages": recs,
        "total_seconds": round(total_s, 2),
        "total_cost_usd": cost_or_unknown(total_s),
        "gpu_hourly_usd": rate,
        "next": next_steps(run, recs, ok),
        "finished_at": _iso(),
    }
    text = "\n".join(
        [
            f"summary of run {run_dir.name} ({'done' if ok else 'FAILED'}); cost {cost_text(total_s)}",
            "",
            render_table(recs),
            "",
            "next:",
            *[f"  - {s}" for s in doc["next"]],
            "",
        ]
    )
    text = redact.redact(text)
    try:
        write_json_atomic(run.summary, json.loads(redact.redact(json.dumps(doc, default=str))))
        write_text_atomic(run.summary_text, text)
    except OSError as err:
        log.warning("could not write %s: %s", run.summary, err)
    sys.stdout.flush()
    print("\n" + text, flush=True)
    return doc


if __name__ == "__main__":  # python -m fishtune.status RUN_DIR: status.json as it stands (a dead run says "killed")
    print(json.dumps(read(sys.argv[1] if len(sys.argv) > 1 else "."), indent=2, sort_keys=True))
