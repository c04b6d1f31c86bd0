"""The product's ``train`` and ``merge`` stages on ``make rehearse``'s random full-size model, on a GPU.

``make rehearse`` runs every stage on the CPU at shrunken batch shapes; this runs the two that a GPU changes (the
auto checkpointing plan, bf16-true training at the real batch shape, merging a bf16 base) as the product runs
them (``python entrypoint.py STAGE``, one process each), on packed data made here from synthetic utterances (no
audio tools needed). Writes ``fullsize.json``: per stage exit code, wall time and last log line; the training
summary (steps, losses, checkpointing plan, peak memory) and the merge validation.

    python -m bench.fullsize --dir /tmp/fullsize                 # s1-mini shapes (random weights), the GPU
    python -m bench.fullsize --dir /tmp/fullsize --model tiny    # the tiny model: a check of this script (CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import common

ROOT = Path(__file__).resolve().parents[1]


def write_model(kind: str, folder: Path) -> Path:
    if (folder / "model.pth").is_file():
        return folder
    if kind == "tiny":
        from fishtune.modeling.tiny import write_tiny_model

        return write_tiny_model(folder)
    from fishtune.modeling.s1mini import write_random_model

    return write_random_model(folder)


def write_packed(model_dir: Path, run_dir: Path, clips: int) -> None:
    """``packed/train`` and ``packed/val`` as the pack stage writes them: one speaker, recipe-like utterances."""
    from fish_speech.models.text2semantic.llama import DualARModelArgs

    from fishtune import packed
    from fishtune.layout import RunLayout
    from fishtune.proto import text_data_pb2 as pb

    args = DualARModelArgs.from_pretrained(str(model_dir))
    residual = 1024 if args.codebook_size == 4096 else 32  # the codecs' residual codebooks (s1-mini, tiny)
    utts = common.synthetic_utterances(clips, args.num_codebooks, args.codebook_size, residual, seed=0)
    split = {"train": utts[: clips - 4], "val": utts[clips - 4 :]}
    for name, part in split.items():
        sentences = [packed.make_sentence(u.text, u.codes) for u in part]
        folder = RunLayout.at(run_dir).shards(name)
        folder.mkdir(parents=True, exist_ok=True)
        record = pb.TextData(source="fishtune", name="speaker", sentences=sentences)
        packed.write(folder / "00000000.protos", [record])


def stage(name: str, env: dict, overrides: list[str], log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "entrypoint.py"), name, *overrides], env=env, stdout=out, stderr=out
        )
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return {
        "passed": proc.returncode == 0,
        "exit_code": proc.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "last_line": lines[-1][-300:] if lines else "",
    }


def overrides(kind: str, device: str, steps: int) -> list[str]:
    tiny = kind == "tiny"
    out = [f"model={'tiny' if tiny else 's1-mini'}", "model.allow_untrained=true", "model.verify_files=false"]
    out += [f"train.device={device}", f"train.max_steps={steps}", f"train.val_every={steps}"]
    out += [f"train.ckpt_every={steps}", "train.warmup_steps=1", "train.val_batches=2", "train.guard.batches=1"]
    out += ["train.log_every=1", "doctor.min_free_gb=1"]
    if tiny:  # a quick CPU check of this script: tiny shapes
        out += ["preset=tiny", "train.batch_size=2", "train.max_length=512", "train.num_workers=0"]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="bench-results/fullsize")
    ap.add_argument("--model", default="s1-mini", choices=["s1-mini", "tiny"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = Path(args.dir).resolve()
    t0 = time.perf_counter()
    model_dir = write_model(args.model, root / f"model-{args.model}")
    model_seconds = round(time.perf_counter() - t0, 1)
    runs = root / "runs"
    run_dir = runs / "fullsize"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    write_packed(model_dir, run_dir, args.clips)
    env = {**os.environ, "FISHTUNE_MODEL": str(model_dir), "FISHTUNE_RUNS": str(runs), "RUN_NAME": "fullsize"}
    env |= {"FISHTUNE_CACHE": str(root / "cache"), "FISHTUNE_DATA": str(root / "data"), "TQDM_DISABLE": "1"}
    env.pop("STAGE", None)
    result = {"benchmark": "fullsize", "model": args.model, "model_write_seconds": model_seconds, "stages": {}}
    for name in ("train", "merge"):
        result["stages"][name] = stage(name, env, overrides(args.model, args.device, args.steps), root / f"{name}.log")
        if not result["stages"][name]["passed"]:
            break
    from fishtune.layout import RunLayout

    run = RunLayout.at(run_dir)
    summary, state = run.train_summary, run.merge_record
    result["train_summary"] = json.loads(summary.read_text()) if summary.is_file() else None
    result["merge_validation"] = json.loads(state.read_text()).get("validation") if state.is_file() else None
    result["passed"] = all(s["passed"] for s in result["stages"].values()) and len(result["stages"]) == 2
    common.write_json(result, args.out, f"fullsize-{args.model}")
    return result


if __name__ == "__main__":
    main()
