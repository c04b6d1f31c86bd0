"""Training-step benchmark: the upstream-equivalent setting vs fishtune's optimised default, side by side.

    python -m bench.train --shapes tiny      # CPU, seconds (make bench)
    python -m bench.train --shapes s1-mini   # GPU, real shapes with random weights (make bench-gpu)

Both settings train the same randomly initialised model (same seed) with LoRA r=8 on the same batches of
recipe-like packed utterances, so their loss curves must agree within numerical noise; the JSON reports both
curves and their largest difference.

Settings:
- ``upstream``: what Fish Speech's fine-tuning recipe does: bf16-true weights, gradient checkpointing on every
  layer, the full ``[tokens, vocab]`` logits kept for the loss, unfused AdamW, manual attention in the fast
  (codebook) transformer.
- ``optimized``: fishtune's default for a large GPU: no gradient checkpointing, chunked recomputed
  cross-entropy over the targeted rows only, fused AdamW, SDPA in the fast transformer, optional torch.compile.
- ``mem24``: the 24 GB preset (configs/preset/24gb.yaml): checkpointing on, small CE chunks.

MFU = model FLOPs / (step time x dense bf16 peak), with model FLOPs per step =
6 x (slow params + token head) x tokens + 6 x fast params x (semantic frames x codebooks)
+ 6 x n_layer x dim x T^2 per sequence (causal attention, forward + backward). This is the usual 6N convention;
with LoRA the frozen base needs no weight gradients, so the work actually done is nearer 4N: MFU by the 6N
convention overstates utilisation by up to 1.5x. Both are reported.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from bench import common, shapes
from fishtune import lora
from fishtune.training import forward as fw
from fishtune.training.samples import Collate, PackedTrainStream

SETTINGS = {
    "upstream": dict(gradient_checkpointing=True, ce_chunk=0, fused_adamw=False, fast_sdpa=False),
    "optimized": dict(gradient_checkpointing=False, ce_chunk=4096, fused_adamw=True, fast_sdpa=True),
    "mem24": dict(gradient_checkpointing=True, ce_chunk=1024, fused_adamw=True, fast_sdpa=True),
}


def param_counts(model) -> dict:
    emb = {"embeddings", "codebook_embeddings", "fast_embeddings"}
    slow = fast = head = 0
    for name, p in model.named_parameters():
        if "lora_" in name or name.split(".")[0] in emb:
            continue
        if name.startswith(("fast_layers", "fast_output", "fast_norm", "fast_project_in")):
            fast += p.numel()
        elif name.startswith("output"):
            head += p.numel()
        else:
            slow += p.numel()
    return {"slow": slow, "fast": fast, "head": head}


def step_flops(model, batch, counts) -> float:
    cfg = model.config
    pad = batch["key_padding_mask"]
    tokens = int((~pad).sum())
    sem = int(fw.semantic_mask(model, batch["labels"][:, 0]).sum())
    lengths = (~pad).sum(dim=1).tolist()
    attn = sum(6 * cfg.n_layer * cfg.n_head * cfg.head_dim * t * t for t in lengths)
    return 6 * (counts["slow"] + counts["head"]) * tokens + 6 * counts["fast"] * sem * cfg.num_codebooks + attn


def run_setting(name: str, opts: dict, args, device, dtype, batches) -> dict:
    model, _ = shapes.build_model(args.shapes, seed=args.seed, device=device, dtype=dtype)
    lora.apply_lora(model, lora.LoraSettings(r=8, alpha=16, dropout=0.0))
    model.train()
    if opts["fast_sdpa"]:
        for layer in model.fast_layers:
            layer.attention.use_sdpa = True
    if args.compile and name != "upstream":
        for i, layer in enumerate(model.layers):
            model.layers[i] = torch.compile(layer, dynamic=True)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = opts["fused_adamw"] and device.type == "cuda"
    opt = torch.optim.AdamW(
        params, lr=1e-4, betas=(0.9, 0.95), eps=1e-5, fused=fused or None, foreach=None if fused else True
    )
    counts = param_counts(model)
    losses, times, flops, toks = [], [], [], []
    common.reset_peak(device)
    for i, batch in enumerate(batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with common.Timer(device) as t:
            out = fw.loss(model, batch, opts["gradient_checkpointing"], opts["ce_chunk"])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        if i >= args.warmup:
            times.append(t.seconds)
            toks.append(out.tokens)
            flops.append(step_flops(model, batch, counts))
    step = statistics.mean(times)
    res = {
        "options": opts | {"compile": bool(args.compile and name != "upstream")},
        "step_seconds_mean": round(step, 5),
        "step_seconds_median": round(statistics.median(times), 5),
        "tokens_per_second": round(sum(toks) / sum(times), 1),
        "peak_memory_gb": round(common.peak_memory_gb(device), 3),
        "model_tflops_per_step": round(statistics.mean(flops) / 1e12, 4),
        "losses": [round(x, 6) for x in losses],
    }
    peak = shapes.peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if peak:
        res["mfu_6n"] = round(statistics.mean(flops) / step / peak, 4)
        res["mfu_4n_lora"] = round(res["mfu_6n"] * 4 / 6, 4)
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def make_batches(args, device_dtype_model) -> tuple[list[dict], float]:
    model, residual = device_dtype_model
    tok, nc = model.tokenizer, model.config.num_codebooks
    utts = common.synthetic_utterances(args.clips, nc, model.config.codebook_size, residual, seed=args.seed)
    groups = [utts]  # one speaker, like the recipe
    stream = PackedTrainStream(
        groups, tok, nc, args.max_length, args.batch_size, Collate(tok.get_token_id("<|end_of_text|>")), seed=args.seed
    )
    t0 = time.perf_counter()
    batches = [stream.batch(b) for b in range(args.warmup + args.steps)]
    data_seconds = (time.perf_counter() - t0) / len(batches)
    return batches, data_seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="training step benchmark")
    ap.add_argument("--shapes", default="tiny", choices=["tiny", "s1-mini"])
    ap.add_argument("--settings", default="upstream,optimized", help="comma list of: " + ", ".join(SETTINGS))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the slow layers in non-upstream settings")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = common.pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.set_float32_matmul_precision("high")
    probe = shapes.build_model(args.shapes, seed=args.seed, device="cpu", dtype=torch.float32)
    batches, data_seconds = make_batches(args, probe)
    del probe
    result = {
        "benchmark": "train_step",
        "shapes": args.shapes,
        **common.device_info(device),
        "precision": "bf16-true" if dtype == torch.bfloat16 else "fp32",
        "lora": {"r": 8, "alpha": 16},
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "steps": args.steps,
        "warmup": args.warmup,
        "padding_fraction": round(float(sum(b["key_padding_mask"].float().mean() for b in batches) / len(batches)), 4),
        "data_seconds_per_batch": round(data_seconds, 4),
        "mfu_formula": "6*(slow+head params)*tokens + 6*fast params*frames*codebooks + 6*n_layer*dim*T^2 per "
        "sequence, over dense bf16 peak",
        "settings": {},
    }
    for name in args.settings.split(","):
        result["settings"][name] = run_setting(name, SETTINGS[name], args, device, dtype, batches)
    names = list(result["settings"])
    if "upstream" in result["settings"]:
        base = result["settings"]["upstream"]
        result["ratios_vs_upstream"] = {
            n: {
                "tokens_per_second": round(s["tokens_per_second"] / base["tokens_per_second"], 3),
                # CPU peak memory is the process's max RSS (cumulative over settings): no meaningful ratio
                "peak_memory": round(s["peak_memory_gb"] / base["peak_memory_gb"], 3)
                if device.type == "cuda"
                else None,
            }
            for n, s in result["settings"].items()
            if n != "upstream"
        }
        result["loss_curve_max_abs_diff"] = {
            n: round(max(abs(a - b) for a, b in zip(base["losses"], s["losses"], strict=True)), 6)
            for n, s in result["settings"].items()
            if n != "upstream"
        }
        slowest = max(s["step_seconds_mean"] for s in result["settings"].values())
        result["data_loader_ok"] = data_seconds < 0.5 * min(
            s["step_seconds_mean"] for s in result["settings"].values()
        ) or math.isclose(slowest, 0.0)
    _plot(result, args.out)
    common.write_json(result, args.out, f"train-{args.shapes}-{names[-1]}")
    return result


def _plot(result: dict, out: str | None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is locked
        return
    from pathlib import Path

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, s in result["settings"].items():
        ax.plot(s["losses"], label=f"{name} ({s['tokens_per_second']:.0f} tok/s)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{result['shapes']} on {result.get('gpu', result['device'])}")
    ax.legend()
    path = Path(out).with_suffix(".png") if out else Path("bench-results") / f"train-{result['shapes']}-loss.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    result["loss_plot"] = str(path)


if __name__ == "__main__":
    main()
