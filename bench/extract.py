"""Extraction benchmark: codec encoder real-time factor, length-bucketed batches vs one clip at a time.

    python -m bench.extract --shapes tiny       # CPU (make bench)
    python -m bench.extract --shapes s1-mini    # GPU: Fish Speech's s1-mini codec architecture, random weights

Audio: noise with recipe-like durations (codec cost does not depend on content). Reports audio seconds per
wall second (real-time factor, higher is faster), peak memory, and with ``--memory-fraction`` on a GPU it caps
the process's memory (``torch.cuda.set_per_process_memory_fraction``) to exercise the OOM back-off: the run must
finish with the same codes as the uncapped batched run. ``--precisions tf32,bf16`` also runs the batches with TF32
matmuls and convolutions and in bf16, and reports how many codes agree with strict fp32 (TF32 off everywhere).
"""

from __future__ import annotations

import argparse

import torch

from bench import common
from fishtune import devices
from fishtune.extraction import Extractor, iter_batches
from fishtune.modeling import codec as codec_mod


def build_codec(shapes: str, device):
    """The tiny test codec or Fish Speech's s1-mini codec architecture, with random weights."""
    import tempfile
    from pathlib import Path

    from omegaconf import OmegaConf

    if shapes == "tiny":
        from fishtune.modeling.tiny import codec_config

        path = Path(tempfile.mkdtemp()) / "codec.yaml"
        path.write_text(OmegaConf.to_yaml(OmegaConf.create(codec_config())))
    else:
        path = codec_mod.fish_speech_codec_config()
    torch.manual_seed(0)
    return codec_mod.build_codec(path).eval().to(device)


def run(codec, waves, ids, device, batched: bool, max_seconds: float, max_clips: int, dtype=torch.float32) -> dict:
    rows = [{"id": i, "duration": w.numel() / 44100} for i, w in zip(ids, waves, strict=True)]
    by_id = dict(zip(ids, waves, strict=True))
    ex = Extractor(lambda ws: codec_mod.encode(codec, ws, device, dtype))
    common.reset_peak(device)
    out = {}
    with common.Timer(device) as t:
        if batched:  # the extract stage's own batching, OOM back-off included
            for batch in iter_batches(rows, max_seconds, max_clips, ex):
                codes = ex.encode([by_id[r["id"]] for r in batch], [r["id"] for r in batch])
                out.update({r["id"]: c for r, c in zip(batch, codes, strict=True)})
        else:
            for r in rows:
                out[r["id"]] = ex.encode([by_id[r["id"]]], [r["id"]])[0]
    audio_s = sum(r["duration"] for r in rows)
    return {
        "seconds": round(t.seconds, 3),
        "audio_seconds": round(audio_s, 1),
        "real_time_factor": round(audio_s / t.seconds, 1),
        "peak_memory_gb": round(common.peak_memory_gb(device), 3),
        "oom_backoffs": ex.oom_events,
        "codes": out,
    }


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def other_precision(precision: str, codec, waves, ids, device, args, fp32: dict) -> dict:
    """The bucketed batches in ``tf32`` or ``bf16``: speed, and agreement of the codes with strict fp32."""
    if precision not in ("tf32", "bf16"):
        raise SystemExit(f"unknown precision {precision!r}: use tf32 or bf16")
    set_tf32(precision == "tf32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    try:
        res = run(codec, waves, ids, device, True, args.max_batch_seconds, args.max_batch_clips, dtype)
    finally:
        set_tf32(False)
    agree = sum(int((res["codes"][i] == fp32["codes"][i]).sum()) for i in ids)
    total = sum(fp32["codes"][i].numel() for i in ids)
    return {k: v for k, v in res.items() if k != "codes"} | {
        "codes_agreement_vs_fp32": round(agree / total, 4),
        "speedup_vs_fp32_batched": round(fp32["seconds"] / res["seconds"], 2),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="codec extraction benchmark")
    ap.add_argument("--shapes", default="tiny", choices=["tiny", "s1-mini"])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--max-batch-seconds", type=float, default=240.0)
    ap.add_argument("--max-batch-clips", type=int, default=32)
    ap.add_argument("--memory-fraction", type=float, default=0.0, help="GPU only: cap memory to force OOM back-off")
    ap.add_argument(
        "--precisions",
        default="",
        help="comma list of tf32, bf16: also run the batches so (TF32: fp32 weights with TF32 matmuls and "
        "convolutions; bf16: extract.precision=bf16), with code agreement against strict fp32",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = devices.pick(args.device)
    set_tf32(False)  # the fp32 reference is strict fp32 (cuDNN would otherwise run convolutions in TF32)
    codec = build_codec(args.shapes, device)
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(int(d * 44100), generator=g) * 0.1 for d in common.recipe_durations(args.clips)]
    ids = [f"c{i:04d}" for i in range(len(waves))]
    with torch.inference_mode():
        single = run(codec, waves, ids, device, False, args.max_batch_seconds, args.max_batch_clips)
        batched = run(codec, waves, ids, device, True, args.max_batch_seconds, args.max_batch_clips)
        same = all(torch.equal(single["codes"][i], batched["codes"][i]) for i in ids)
        result = {
            "benchmark": "extract",
            "shapes": args.shapes,
            **common.device_info(device),
            "clips": len(waves),
            "one_at_a_time": {k: v for k, v in single.items() if k != "codes"},
            "bucketed_batches": {k: v for k, v in batched.items() if k != "codes"},
            "speedup_batched": round(single["seconds"] / batched["seconds"], 2),
            "codes_identical_batched_vs_single": same,
        }
        for precision in [p for p in args.precisions.split(",") if p]:
            result[f"bucketed_batches_{precision}"] = other_precision(
                precision, codec, waves, ids, device, args, batched
            )
        if args.memory_fraction and device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(args.memory_fraction, device)
            capped = run(codec, waves, ids, device, True, args.max_batch_seconds, args.max_batch_clips)
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            result["capped"] = {k: v for k, v in capped.items() if k != "codes"} | {
                "memory_fraction": args.memory_fraction,
                "codes_identical": all(torch.equal(capped["codes"][i], batched["codes"][i]) for i in ids),
            }
    common.write_json(result, args.out, f"extract-{args.shapes}")
    return result


if __name__ == "__main__":
    main()
