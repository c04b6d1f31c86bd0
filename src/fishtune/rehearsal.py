"""``make rehearse``: every stage on openaudio-s1-mini's real shapes, dtypes and file sizes, on the CPU.

Tests use a tiny model, which hides what only size shows: memory, bf16 rounding, file sizes, tolerances. This
runs ``STAGE=all``'s chain, one stage per process, on a random model laid out and typed like the release
(:mod:`fishtune.modeling.s1mini`, made once and cached) and a few espeak-ng Finnish clips. Only what must shrink
on two CPU cores shrinks: steps, ``train.max_length``, batch size, generated frames and evaluated sentences. The
random base passes the untrained-base guard only through ``model.allow_untrained=true`` on the command line.

Writes ``rehearsal.json``: per stage the exit code, wall time and peak RSS (the stage's process alone, from
``wait4``), the file sizes next to the released ones, the adapter and merged weights' dtypes and the merge
validation's errors. Exit 0 when every stage passed.

    python -m fishtune.rehearsal [--dir build/rehearsal] [--clips 6] [--from STAGE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELEASED_BYTES = {"model.pth": 1_735_122_974, "codec.pth": 1_871_099_728}
SETTINGS = [  # real-size everything, except what two CPU cores cannot do in minutes
    "model=s1-mini",
    "model.allow_untrained=true",  # the random base: allowed only explicitly
    "model.verify_files=false",  # random weights are not the released files
    "doctor.min_free_gb=1",
    "extract.device=cpu",
    "train.device=cpu",
    "train.precision=bf16-true",  # what a GPU run uses: a bf16 base under fp32 adapters
    "train.batch_size=1",
    "train.max_length=512",
    "train.max_steps=2",
    "train.warmup_steps=1",
    "train.val_every=2",
    "train.ckpt_every=1",
    "train.val_batch_size=1",
    "train.num_workers=0",
    "train.log_every=1",
    "train.guard.batches=1",
    "synthesize.device=cpu",
    "synthesize.text='Hyvää päivää.'",
    "synthesize.max_new_tokens=8",
    "evaluate.device=cpu",
    "evaluate.max_sentences=1",
    "evaluate.heldout_clips=1",
    "evaluate.asr_max_new_tokens=8",
    "evaluate.embed_audio=false",
]


def prepare_inputs(root: Path, clips: int) -> tuple[Path, Path]:
    """The cached model folder and dataset (made once)."""
    from fishtune.demo import make_dataset

    model, data = root / "s1-mini-random", root / "data"
    if not (model / "codec.pth").is_file():
        print(f"rehearse: writing the random full-size model to {model} (once) ...", flush=True)
        # in a process of its own: a stage forked from a parent that held the model would count its pages as
        # the stage's peak RSS
        subprocess.run([sys.executable, "-m", "fishtune.modeling.s1mini", str(model)], check=True)
    if not data.is_dir():
        make_dataset(data, clips=clips, broken=False)
    return model, data


def run_stage(stage: str, env: dict, log: Path) -> dict:
    """One stage in its own process: exit code, wall seconds, peak RSS of that process (``wait4``)."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "entrypoint.py"), stage, *SETTINGS], env=env, stdout=out, stderr=out
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return {
        "passed": proc.returncode == 0,
        "exit_code": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),  # ru_maxrss is in KiB on Linux
        "last_line": tail[-1][-300:] if tail else "",
    }


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def _dtypes(path: Path) -> list[str]:
    import torch

    if not path.is_file():
        return []
    obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    sd = obj.get("state_dict", obj)
    return sorted({str(v.dtype).removeprefix("torch.") for v in sd.values() if isinstance(v, torch.Tensor)})


def outputs(model: Path, run_dir: Path) -> dict:
    """File sizes (released ones beside), dtypes and the merge validation of a finished rehearsal."""
    from fishtune.layout import RunLayout

    run = RunLayout.at(run_dir)
    ckpts = sorted(run.checkpoints.glob("step_*.ckpt"))
    state = run.merge_record
    validation = json.loads(state.read_text())["validation"] if state.is_file() else None
    return {
        "bytes": {
            "model.pth": _size(model / "model.pth"),
            "codec.pth": _size(model / "codec.pth"),
            "lora.pth": _size(run.lora),
            "checkpoint (step_*.ckpt)": _size(ckpts[-1]) if ckpts else None,
            "merged model.pth": _size(run.merged_model),
        },
        "released_bytes": RELEASED_BYTES,
        "dtypes": {
            "lora.pth": _dtypes(run.lora),
            "merged model.pth": _dtypes(run.merged_model),
        },
        "merge_validation": validation,
    }


def rehearse(root: Path, clips: int, start: str | None = None) -> dict:
    """The chain on a fresh run; ``start``: keep the run and the figures of the stages before ``start``."""
    from fishtune.runstate import write_json_atomic
    from fishtune.stages import CHAIN

    model, data = prepare_inputs(root, clips)
    runs = root / "runs"
    stages: dict[str, dict] = {}
    if start:
        before = json.loads((root / "rehearsal.json").read_text())["stages"]
        stages = {name: before[name] for name in CHAIN[: CHAIN.index(start)]}
    else:
        shutil.rmtree(runs / "rehearsal", ignore_errors=True)  # a fresh run each time: every stage does its work
    (root / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FISHTUNE_DATA": str(data), "FISHTUNE_RUNS": str(runs), "FISHTUNE_CACHE": str(root / "cache")}
    env |= {"FISHTUNE_MODEL": str(model), "RUN_NAME": "rehearsal", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    env.pop("STAGE", None)
    for stage in CHAIN[len(stages) :]:
        print(f"rehearse: {stage} ...", flush=True)
        stages[stage] = run_stage(stage, env, root / "logs" / f"{stage}.log")
        print(f"rehearse: {stage}: {_line(stages[stage])}", flush=True)
        if not stages[stage]["passed"]:
            break  # later stages need this one's outputs
    result = {
        "passed": len(stages) == len(CHAIN) and all(s["passed"] for s in stages.values()),
        "settings": SETTINGS,
        "clips": clips,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "stages": stages,
        **outputs(model, runs / "rehearsal"),
    }
    write_json_atomic(root / "rehearsal.json", result)
    return result


def _line(s: dict) -> str:
    state = "passed" if s["passed"] else f"FAILED (exit {s['exit_code']}): {s['last_line']}"
    return f"{s['seconds']:.0f} s, peak RSS {s['peak_rss_gib']:.1f} GiB, {state}"


def table(result: dict) -> str:
    """Markdown: time and peak RSS per stage, file sizes beside the released ones, the merge validation."""
    from fishtune.stages import CHAIN

    rows = ["| stage | passed | wall time | peak RSS |", "|---|---|---|---|"]
    stages = [(n, result["stages"][n]) for n in CHAIN if n in result["stages"]]
    for name, s in stages:
        ok = "yes" if s["passed"] else "NO"
        rows.append(f"| {name} | {ok} | {s['seconds']:.0f} s | {s['peak_rss_gib']:.1f} GiB |")
    total = sum(s["seconds"] for _, s in stages)
    rows.append(f"| all | | {total / 60:.1f} min | {max(s['peak_rss_gib'] for _, s in stages):.1f} GiB |")
    rows += ["", "| file | bytes | released |", "|---|---|---|"]
    for name, size in sorted(result["bytes"].items(), key=lambda kv: -(kv[1] or 0)):
        released = result["released_bytes"].get(name)
        rows.append(f"| {name} | {size:,} | {f'{released:,}' if released else ''} |" if size else f"| {name} | - | |")
    v = result.get("merge_validation") or {}
    rows += [
        "",
        f"dtypes: lora.pth {result['dtypes']['lora.pth']}, merged model.pth {result['dtypes']['merged model.pth']}; "
        f"merge: {v.get('adapted_tensors')} adapted tensors, max weight-delta error {v.get('max_delta_error', 0):.2g}, "
        f"max output difference {v.get('max_rel_diff', 0):.3g} of the outputs' magnitude (tolerance {v.get('rtol')})",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="build/rehearsal", help="model, data, runs and rehearsal.json (cached)")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--from", dest="start", help="rerun from this stage, keeping the earlier stages' run and figures")
    args = ap.parse_args(argv)
    root = Path(args.dir).resolve()
    result = rehearse(root, args.clips, args.start)
    print(table(result))
    print(f"rehearse: {'passed' if result['passed'] else 'FAILED'}; {root / 'rehearsal.json'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
