"""Training-step benchmark: the upstream-equivalent setting vs fishtune's optimised default, side by side.

    python -m bench.train --shapes tiny      # CPU, seconds (make bench)
    python -m bench.train --shapes s1-mini   # GPU, real shapes with random weights (make bench-gpu)

Both settings train the same randomly initialised model (same seed) with LoRA r=8 on the same batches of
recipe-like packed utterances, so their loss curves must agree within numerical noise; the JSON reports both
curves and their largest difference.

Settings:
- ``upstream``: what Fish Speech's fine-tuning recipe does: utterances packed until the next would not fit, batches
  padded to their longest row (so attention needs an explicit mask and cannot use the flash kernel), bf16-true
  weights, gradient checkpointing on every layer, the full ``[tokens, vocab]`` logits kept for the loss, unfused
  AdamW, manual attention in the fast (codebook) transformer.
- ``optimized``: fishtune's default (configs/config.yaml): rows filled to max_length (no padding, flash attention
  with ``is_causal``), gradient checkpointing ``auto`` (the fewest layers that fit 90% of the GPU; none on CPU),
  chunked recomputed cross-entropy over the targeted rows only, fused AdamW, SDPA in the fast transformer,
  optional torch.compile.
- ``mem24``: the 24 GB preset (configs/preset/24gb.yaml): as optimized, but the auto plan is capped at 22 GiB and
  the CE chunks are small.

Settings with the same packing train on identical batches, so their per-step loss curves must agree within
numerical noise (``loss_curve_max_abs_diff``). Filled and padded batches hold the same utterances in different
rows, so across packings the check is the loss on fixed held-out batches after the last step
(``heldout_loss_after``).

MFU = model FLOPs / (step time x dense bf16 peak), with model FLOPs per step =
6 x (slow params + token head) x tokens + 6 x fast params x (semantic frames x codebooks)
+ 6 x n_layer x dim x T^2 per sequence (causal attention, forward + backward). This is the usual 6N convention;
with LoRA the frozen base needs no weight gradients, so the work actually done is nearer 4N: MFU by the 6N
convention overstates utilisation by up to 1.5x. Both are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench import common, shapes
from fishtune import devices, lora
from fishtune.training import forward as fw
from fishtune.training import memory
from fishtune.training.samples import Collate, PackedTrainStream

_UPSTREAM = dict(packing="pad", gradient_checkpointing=True, ce_chunk=0, fused_adamw=False, sdpa=False)
# the ladder from upstream to optimized, one change at a time (--settings ladder): what each change is worth
_LADDER = [
    ("+fill", {"packing": "fill"}),
    ("+auto_ckpt", {"gradient_checkpointing": "auto"}),
    ("+chunked_ce", {"ce_chunk": 4096}),
    ("+fast_sdpa", {"sdpa": True}),
    ("optimized", {"fused_adamw": True}),
]
SETTINGS = {"upstream": _UPSTREAM}
for _name, _change in _LADDER:
    SETTINGS[_name] = list(SETTINGS.values())[-1] | _change
SETTINGS["mem24"] = SETTINGS["optimized"] | {"memory_limit_gb": 22, "ce_chunk": 1024}
SHORTHANDS = {"ladder": ["upstream"] + [name for name, _ in _LADDER]}


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


def run_setting(name: str, opts: dict, args, device, dtype, data: dict) -> dict:
    model, _ = shapes.build_model(args.shapes, seed=args.seed, device=device, dtype=dtype)
    lora.apply_lora(model, lora.LoraSettings(r=8, alpha=16, dropout=0.0))
    model.train()
    if opts["sdpa"]:
        fw.use_sdpa_everywhere(model)
    compiled = bool(args.compile and name != "upstream")
    if compiled:
        fw.compile_layers(model, args.compile)
    batches = [{k: v.to(device) for k, v in b.items()} for b in data[opts["packing"]]]
    ckpt = opts["gradient_checkpointing"]
    plan = None
    if ckpt == "auto":
        t0 = time.perf_counter()
        plan = memory.plan(model, lambda: batches[0], opts["ce_chunk"], device, 0.9, opts.get("memory_limit_gb"))
        plan["seconds"] = round(time.perf_counter() - t0, 2)
        ckpt = plan["checkpointed"]
    params = [p for p in model.parameters() if p.requires_grad]
    fused = opts["fused_adamw"] and device.type == "cuda"
    opt = torch.optim.AdamW(
        params, lr=args.lr, betas=(0.9, 0.95), eps=1e-5, fused=fused or None, foreach=None if fused else True
    )
    counts = param_counts(model)
    losses, times, flops, toks = [], [], [], []
    common.reset_peak(device)
    try:
        for i, batch in enumerate(batches):
            with common.Timer(device) as t:
                out = fw.loss(model, batch, ckpt, opts["ce_chunk"])
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            losses.append(float(out.loss.detach()))
            if i >= args.warmup:
                times.append(t.seconds)
                toks.append(out.tokens)
                flops.append(step_flops(model, batch, counts))
    except torch.OutOfMemoryError:  # e.g. upstream's full logits on a 24 GB GPU: a result, not a crash
        oom = f"out of memory at step {len(losses)}"
    else:
        oom = None
    if oom:
        model = opt = out = batches = None  # free before the next setting
        devices.empty_cache()
        return {"options": opts, "error": oom}
    peak_gb = common.peak_memory_gb(device)
    step = statistics.mean(times)
    res = {
        "options": opts
        | {"compile": args.compile if compiled else False, "checkpointed_layers": fw.checkpointed_units(model, ckpt)},
        "step_seconds_mean": round(step, 5),
        "step_seconds_median": round(statistics.median(times), 5),
        "tokens_per_second": round(sum(toks) / sum(times), 1),
        "peak_memory_gb": round(peak_gb, 3),
        "model_tflops_per_step": round(statistics.mean(flops) / 1e12, 4),
        "losses": [round(x, 6) for x in losses],
        "heldout_loss_after": round(heldout_loss(model, data["heldout"], device), 6),
    }
    if plan is not None:
        res["checkpoint_plan"] = plan
    peak = shapes.peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if peak:
        res["mfu_6n"] = round(statistics.mean(flops) / step / peak, 4)
        res["mfu_4n_lora"] = round(res["mfu_6n"] * 4 / 6, 4)
    del model, opt
    devices.empty_cache()
    return res


@torch.no_grad()
def heldout_loss(model, batches: list[dict], device) -> float:
    """Token-weighted mean loss on fixed held-out batches (same for every setting)."""
    model.eval()
    total = weight = 0.0
    for b in batches:
        out = fw.loss(model, {k: v.to(device) for k, v in b.items()})
        total += float(out.loss) * out.tokens
        weight += out.tokens
    model.train()
    return total / weight


def make_batches(args, probe_model, packings: set[str]) -> tuple[dict, dict]:
    """Batches for each packing from the same utterances, plus held-out batches from other utterances.
    -> (batches by packing and "heldout", data seconds per batch by packing)."""
    model, residual = probe_model
    tok, nc = model.tokenizer, model.config.num_codebooks
    utts = common.synthetic_utterances(args.clips, nc, model.config.codebook_size, residual, seed=args.seed)
    collate = Collate(tok.get_token_id("<|end_of_text|>"))
    heldout = common.synthetic_utterances(16, nc, model.config.codebook_size, residual, seed=args.seed + 1)
    data, seconds = {}, {}
    for packing in sorted(packings):
        stream = PackedTrainStream(
            [utts], tok, nc, args.max_length, args.batch_size, collate, seed=args.seed, packing=packing
        )  # one speaker, like the recipe
        n = args.warmup + args.steps
        data[packing] = [stream.batch(b) for b in range(n)]
        t0 = time.perf_counter()  # steady state: transcripts already tokenized, as after a training run's first steps
        for b in range(n, n + 5):
            stream.batch(b)
        seconds[packing] = round((time.perf_counter() - t0) / 5, 4)
    held = PackedTrainStream([heldout], tok, nc, args.max_length, args.batch_size, collate, seed=1, packing="pad")
    data["heldout"] = [held.batch(b) for b in range(2)]
    return data, seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="training step benchmark")
    ap.add_argument("--shapes", default="tiny", choices=["tiny", "s1-mini"])
    ap.add_argument(
        "--settings",
        default="upstream,optimized",
        help="comma list of: " + ", ".join([*SETTINGS, *SHORTHANDS]) + " (ladder: one change at a time)",
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lr", type=float, default=1e-3, help="high enough that the loss moves in a few steps")
    ap.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        help="torch.compile the layers in non-upstream settings (backend: inductor, or e.g. aot_eager)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = devices.pick(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.set_float32_matmul_precision("high")
    probe = shapes.build_model(args.shapes, seed=args.seed, device="cpu", dtype=torch.float32)
    names = [n for part in args.settings.split(",") for n in SHORTHANDS.get(part, [part])]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}: choose from {', '.join(SETTINGS)}")
    data, data_seconds = make_batches(args, probe, {SETTINGS[n]["packing"] for n in names})
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
        "padding_fraction": {
            p: round(float(sum(b["key_padding_mask"].float().mean() for b in data[p]) / len(data[p])), 4)
            for p in data_seconds
        },
        "data_seconds_per_batch": data_seconds,
        "mfu_formula": "6*(slow+head params)*tokens + 6*fast params*frames*codebooks + 6*n_layer*dim*T^2 per "
        "sequence, over dense bf16 peak",
        "settings": {},
    }
    for name in names:
        result["settings"][name] = run_setting(name, SETTINGS[name], args, device, dtype, data)
    failed = {n: s["error"] for n, s in result["settings"].items() if "error" in s}
    if failed:
        result["failed"] = failed
    settings = {n: s for n, s in result["settings"].items() if "error" not in s}
    if "upstream" in settings:
        base = settings["upstream"]
        result["ratios_vs_upstream"] = {
            n: {
                "tokens_per_second": round(s["tokens_per_second"] / base["tokens_per_second"], 3),
                # CPU peak memory is the process's max RSS (cumulative over settings): no meaningful ratio
                "peak_memory": round(s["peak_memory_gb"] / base["peak_memory_gb"], 3)
                if device.type == "cuda"
                else None,
            }
            for n, s in settings.items()
            if n != "upstream"
        }
        result["heldout_loss_diff_vs_upstream"] = {
            n: round(s["heldout_loss_after"] - base["heldout_loss_after"], 6) for n, s in settings.items()
        }
    # each setting against the first one with the same packing (identical batches)
    first: dict[str, str] = {}
    result["loss_curve_max_abs_diff"] = {}
    for n, st in settings.items():
        ref = first.setdefault(st["options"]["packing"], n)
        if ref != n:
            diff = max(abs(x - y) for x, y in zip(st["losses"], settings[ref]["losses"], strict=True))
            result["loss_curve_max_abs_diff"][f"{n} vs {ref}"] = round(diff, 6)
    fastest_step = min(s["step_seconds_mean"] for s in settings.values())
    # the DataLoader's workers (train.num_workers, 2 by default) make batches in parallel with the GPU's step
    result["data_loader_ok"] = all(v < 0.5 * fastest_step for v in data_seconds.values())
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
        if "losses" not in s:
            continue
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
