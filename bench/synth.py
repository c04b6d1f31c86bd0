"""Synthesis benchmark: first-audio latency and real-time factor of ``synthesize``'s generation + decoding.

    python -m bench.synth --shapes tiny       # CPU (make bench)
    python -m bench.synth --shapes s1-mini    # GPU: s1-mini shapes with random weights (make bench-gpu)

First-audio latency = time from the call to the first generated frame (prompt prefill + one decoding step);
a streaming server could start playing then. Real-time factor = wall seconds / audio seconds (below 1 is
faster than real time), for generation alone and with codec decoding.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

from bench import common, shapes
from bench.extract import build_codec
from fishtune import devices
from fishtune.generation import generate_codes
from fishtune.modeling import codec as codec_mod


def main(argv: list[str] | None = None) -> dict:
    from fish_speech.models.text2semantic import inference as inf

    ap = argparse.ArgumentParser(description="synthesis benchmark")
    ap.add_argument("--shapes", default="tiny", choices=["tiny", "s1-mini"])
    ap.add_argument("--frames", type=int, default=64, help="frames to generate per sentence (21.5 per second)")
    ap.add_argument("--sentences", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = devices.pick(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    import os
    import sys

    if not sys.stdout.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    model, _ = shapes.build_model(args.shapes, seed=0, device=device, dtype=dtype)
    model.eval()
    codec = build_codec(args.shapes, device)
    original = inf.decode_one_token_ar
    state: dict = {}

    def timed_decode(*a, **k):
        out = original(*a, **k)
        if state.get("first") is None:  # the prefill step: the first frame exists now
            common.sync(device)
            state["first"] = time.perf_counter() - state["t0"]
        return out

    # generate() calls the module-level function for the prefill step: time that one too
    inf.decode_one_token_ar = timed_decode
    rows = []
    text = "Hyvää huomenta, tänään on kaunis päivä ja aurinko paistaa."
    params = SimpleNamespace(max_new_tokens=args.frames, temperature=0.7, top_p=0.7, repetition_penalty=1.2)
    with torch.inference_mode():
        for i in range(args.sentences + 1):  # the first one warms up (caches, kernels)
            torch.manual_seed(i)
            common.sync(device)
            state.update(t0=time.perf_counter(), first=None)
            codes = generate_codes(model, device, text, params)  # the product's call (timed_decode patched in)
            common.sync(device)
            gen_s = time.perf_counter() - state["t0"]
            with common.Timer(device) as t:
                wave = codec_mod.decode(codec, codes.clamp_min(0), device)
            audio_s = wave.numel() / 44100
            if i:
                rows.append(
                    {
                        "frames": int(codes.shape[1]),
                        "audio_seconds": round(audio_s, 3),
                        "first_audio_latency_s": round(state["first"], 4),
                        "generate_seconds": round(gen_s, 4),
                        "decode_seconds": round(t.seconds, 4),
                        "rtf_generate": round(gen_s / audio_s, 4),
                        "rtf_total": round((gen_s + t.seconds) / audio_s, 4),
                        "frames_per_second": round(codes.shape[1] / gen_s, 1),
                    }
                )
    inf.decode_one_token_ar = original
    result = {
        "benchmark": "synthesize",
        "shapes": args.shapes,
        **common.device_info(device),
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
        "sentences": rows,
        "mean": {
            k: round(sum(r[k] for r in rows) / len(rows), 4)
            for k in ("first_audio_latency_s", "rtf_generate", "rtf_total", "frames_per_second")
        },
    }
    common.write_json(result, args.out, f"synth-{args.shapes}")
    return result


if __name__ == "__main__":
    main()
