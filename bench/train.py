"""Training-step benchmark: upstream Fish Speech's S1 fine-tuning step vs fishtune's default, one change at a time.

    python -m bench.train --shapes tiny      # CPU, seconds (make bench)
    python -m bench.train --shapes s1-mini   # GPU, real shapes with random weights (make bench-gpu)

Every setting trains the same randomly initialised model (same seed) with the product's LoRA settings
(``configs/config.yaml``: r, alpha, dropout 0.01) on batches of recipe-like utterances of one speaker, reseeding
before each step so that LoRA dropout draws the same masks wherever the shapes agree.

Settings (options in :data:`SETTINGS`):
- ``upstream``: upstream's data path and step (:mod:`bench.upstream`): consecutive utterances concatenated and
  truncated at max_length, an attention mask always (no flash kernel), every layer checkpointed (reentrant),
  full-logit cross-entropy, manual attention in the fast transformer, unfused AdamW;
- the ladder (``--settings ladder``) drops one of these per row, ending at ``optimized``: the product's defaults
  (``configs/config.yaml``: ``fill`` rows, no mask, checkpointing ``auto``, chunked cross-entropy over targeted
  rows, SDPA in the fast transformer, fused AdamW);
- ``mem72``: optimized with ``train.memory_limit_gb=72`` (what an 80 GB card would run);
- ``mem24``: optimized with ``preset=24gb`` (``configs/preset/24gb.yaml``).

With one speaker longer than max_length, upstream's concatenated rows are exactly the ``fill`` rows (checked on
every run: ``concat_rows_equal_fill_rows``), so every setting trains on identical batches and their per-step loss
curves must agree within numerical noise (``loss_curve_max_abs_diff``, against the first setting). The held-out
loss before and after training is reported per setting.

Utilisation (:mod:`bench.flops`): MFU = model FLOPs of a frozen-base LoRA step / (step time x peak), HFU = the
FLOPs the setting's kernels compute (recompute, masked full-square attention, full logits, padding) / (step
time x peak), with peak = a bf16 matmul measured on the same GPU in the same run (fp32 on the CPU); the spec peak
is reported beside it (``BENCH_PEAK_TFLOPS`` overrides it for GPUs not in bench/shapes.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench import common, flops, shapes, upstream
from fishtune import devices, lora
from fishtune.training import forward as fw
from fishtune.training import memory
from fishtune.training.samples import Collate, PackedTrainStream

PRODUCT = common.product_defaults()
_UPSTREAM = {
    "packing": "concat",
    "mask": "always",
    "gradient_checkpointing": "reentrant",
    "full_logits": True,
    "ce_chunk": 0,
    "sdpa": False,
    "fused_adamw": False,
}
# from upstream to the product's defaults, one change at a time (--settings ladder): what each change is worth
_LADDER = [
    ("+fill", {"packing": PRODUCT["packing"]}),  # the same rows, without encoding max_length // 20 utterances
    ("+flash", {"mask": "auto"}),  # no mask on unpadded rows: the flash kernel with is_causal
    ("+auto_ckpt", {"gradient_checkpointing": PRODUCT["gradient_checkpointing"]}),
    ("+targeted_ce", {"full_logits": False}),  # the heads only on rows with a target, logits in fp32
    ("+chunked_ce", {"ce_chunk": PRODUCT["ce_chunk"]}),
    ("+fast_sdpa", {"sdpa": True}),
    ("optimized", {"fused_adamw": True}),
]
SETTINGS = {"upstream": _UPSTREAM}
for _name, _change in _LADDER:
    SETTINGS[_name] = list(SETTINGS.values())[-1] | _change
SETTINGS["mem72"] = SETTINGS["optimized"] | {"memory_limit_gb": 72}
SETTINGS["mem24"] = SETTINGS["optimized"] | PRODUCT["preset_24gb"]
SHORTHANDS = {"ladder": ["upstream"] + [name for name, _ in _LADDER]}


def build(name: str, opts: dict, args, device, dtype):
    """The setting's model (same init for all), with LoRA as the product builds it, and its options applied."""
    model, _ = shapes.build_model(args.shapes, seed=args.seed, device=device, dtype=dtype)
    lo = PRODUCT["lora"]
    lora.apply_lora(model, lora.LoraSettings(r=lo["r"], alpha=lo["alpha"], dropout=lo["dropout"]))
    model.train()
    if opts["sdpa"]:
        fw.use_sdpa_everywhere(model)
    compiled = bool(args.compile and name != "upstream")
    if compiled:
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True  # dropout draws eager's masks: loss curves stay comparable
        fw.compile_layers(model, args.compile)
    return model, compiled


def execution(model, opts: dict, checkpointed: int, batch: dict, device, dtype) -> flops.Execution:
    """What this setting computes beyond the model FLOPs on ``batch`` (for HFU)."""
    probe = torch.empty(0, device=device, dtype=dtype)
    pad = batch.get("key_padding_mask")
    padded = pad is not None and bool(pad.any())
    always = opts["mask"] == "always"
    n_fast = min(checkpointed, len(model.fast_layers))
    return flops.Execution(
        checkpointed_slow=checkpointed - n_fast,
        checkpointed_fast=n_fast,
        slow_mask=always or padded or not fw.flash_ok(model.layers, probe),
        fast_mask=always or not fw.flash_ok(model.fast_layers, probe),
        head_all_rows=opts["full_logits"],
        ce_recompute=opts["ce_chunk"] > 0 and not opts["full_logits"],
    )


def checkpoint_plan(model, opts: dict, batches: list[dict], device) -> tuple[int, dict | None]:
    """-> (checkpointed units, the auto plan or None)."""
    ckpt = opts["gradient_checkpointing"]
    if ckpt == "reentrant":
        return fw.num_units(model), None
    if ckpt != "auto":
        return fw.checkpointed_units(model, ckpt), None
    t0 = time.perf_counter()
    plan = memory.plan(
        model, lambda: batches[0], opts["ce_chunk"], device, PRODUCT["memory_fraction"], opts.get("memory_limit_gb")
    )
    plan["seconds"] = round(time.perf_counter() - t0, 2)
    return plan["checkpointed"], plan


def train_steps(model, opts: dict, n_ckpt: int, batches: list[dict], args, device, dtype) -> dict:
    """The timed loop. -> losses, step times, tokens, model and hardware FLOPs per timed step."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = opts["fused_adamw"] and device.type == "cuda"
    opt = torch.optim.AdamW(
        params,
        lr=args.lr,
        betas=PRODUCT["betas"],
        eps=PRODUCT["eps"],
        fused=fused or None,
        foreach=None if fused else True,
    )
    arch = flops.Arch.from_config(model.config, PRODUCT["lora"]["r"])
    reentrant = opts["gradient_checkpointing"] == "reentrant"
    step_opts = opts if reentrant else opts | {"gradient_checkpointing": n_ckpt}
    out = {"losses": [], "times": [], "tokens": [], "model_flops": [], "hardware_flops": []}
    for i, batch in enumerate(batches):
        torch.manual_seed(args.seed + i)  # the same dropout masks in every setting
        with common.Timer(device) as t:
            res = upstream.loss(model, batch, step_opts)
            res.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        out["losses"].append(float(res.loss.detach()))
        if i >= args.warmup:
            work = flops.Work.from_batch(model, batch)
            out["times"].append(t.seconds)
            out["tokens"].append(res.tokens)
            out["model_flops"].append(flops.model_flops(arch, work)["total"])
            run = execution(model, opts, n_ckpt, batch, device, dtype)
            out["hardware_flops"].append(flops.hardware_flops(arch, work, run)["total"])
    return out


def run_setting(name: str, opts: dict, args, device, dtype, data: dict, peak: dict) -> dict:
    model, compiled = build(name, opts, args, device, dtype)
    batches = [{k: v.to(device) for k, v in b.items()} for b in data[opts["packing"]]]
    common.reset_peak(device)
    try:
        n_ckpt, plan = checkpoint_plan(model, opts, batches, device)
        steps = train_steps(model, opts, n_ckpt, batches, args, device, dtype)
    except torch.OutOfMemoryError:  # e.g. upstream's full logits on a 24 GB GPU: a result, not a crash
        model = batches = None  # free before the next setting
        devices.empty_cache()
        return {"options": opts, "error": "out of memory"}
    step = statistics.mean(steps["times"])
    model_f, hw_f = statistics.mean(steps["model_flops"]), statistics.mean(steps["hardware_flops"])
    res = {
        "options": opts | {"compile": args.compile if compiled else False, "checkpointed_layers": n_ckpt},
        "step_seconds_mean": round(step, 5),
        "step_seconds_median": round(statistics.median(steps["times"]), 5),
        "tokens_per_second": round(sum(steps["tokens"]) / sum(steps["times"]), 1),
        "peak_memory_gb": round(common.peak_memory_gb(device), 3),
        "model_tflops_per_step": round(model_f / 1e12, 4),
        "hardware_tflops_per_step": round(hw_f / 1e12, 4),
        "mfu": round(model_f / step / peak["measured"], 4),
        "hfu": round(hw_f / step / peak["measured"], 4),
        "losses": [round(x, 6) for x in steps["losses"]],
        "heldout_loss_after": round(heldout_loss(model, data["heldout"], device), 6),
    }
    if peak.get("spec"):
        res["mfu_spec_peak"] = round(model_f / step / peak["spec"], 4)
    if plan is not None:
        res["checkpoint_plan"] = plan
    del model, batches
    devices.empty_cache()
    return res


@torch.no_grad()
def heldout_loss(model, batches: list[dict], device) -> float:
    """Token-weighted mean loss on fixed held-out batches (the same for every setting)."""
    model.eval()
    total = weight = 0.0
    for b in batches:
        out = fw.loss(model, {k: v.to(device) for k, v in b.items()})
        total += float(out.loss) * out.tokens
        weight += out.tokens
    model.train()
    return total / weight


def make_batches(args, probe_model, packings: set[str]) -> tuple[dict, dict]:
    """Batches for each packing from the same utterances (one speaker, like the recipe), plus held-out batches
    from other utterances. -> (batches by packing and "heldout", data seconds per batch by packing)."""
    model, residual = probe_model
    tok, nc = model.tokenizer, model.config.num_codebooks
    utts = common.synthetic_utterances(args.clips, nc, model.config.codebook_size, residual, seed=args.seed)
    collate = Collate(tok.get_token_id("<|end_of_text|>"))
    heldout = common.synthetic_utterances(16, nc, model.config.codebook_size, residual, seed=args.seed + 1)
    data, seconds = {}, {}
    for packing in sorted(packings):
        kind, packing_arg = (upstream.ConcatStream, "fill") if packing == "concat" else (PackedTrainStream, packing)
        stream = kind([utts], tok, nc, args.max_length, args.batch_size, collate, seed=args.seed, packing=packing_arg)
        n = args.warmup + args.steps
        data[packing] = [stream.batch(b) for b in range(n)]
        t0 = time.perf_counter()  # steady state: transcripts already tokenized, as after a training run's first steps
        for b in range(n, n + 3):
            stream.batch(b)
        seconds[packing] = round((time.perf_counter() - t0) / 3, 4)
    held = PackedTrainStream([heldout], tok, nc, args.max_length, args.batch_size, collate, seed=1)
    data["heldout"] = [held.batch(b) for b in range(2)]
    return data, seconds


def same_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


def parse_args(argv):
    ap = argparse.ArgumentParser(description="training step benchmark")
    ap.add_argument("--shapes", default="tiny", choices=["tiny", "s1-mini"])
    ap.add_argument(
        "--settings",
        default="upstream,optimized",
        help="comma list of: " + ", ".join([*SETTINGS, *SHORTHANDS]) + " (ladder: one change at a time)",
    )
    ap.add_argument("--batch-size", type=int, default=PRODUCT["batch_size"], help="default: train.batch_size")
    ap.add_argument("--max-length", type=int, default=PRODUCT["max_length"], help="default: train.max_length")
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
    names = [n for part in args.settings.split(",") for n in SHORTHANDS.get(part, [part])]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}: choose from {', '.join(SETTINGS)}")
    return args, names


def measure_peak(device) -> dict:
    """Peak FLOP/s for MFU/HFU: a matmul measured here and now (bf16 on a GPU, fp32 on the CPU), and the spec."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    measured = flops.measure_matmul_peak(device, dtype)
    spec = shapes.peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    return {"measured": measured["flops_per_second"], "matmul": measured["matmul"], "spec": spec}


def compare(result: dict, settings: dict, concat_is_fill: bool, device) -> None:
    """Ratios against upstream, and each setting's loss curve against the first setting with the same batches."""
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
    first: dict[str, str] = {}
    result["loss_curve_max_abs_diff"] = {}
    for n, st in settings.items():
        packing = st["options"]["packing"]
        key = "fill" if packing == "concat" and concat_is_fill else packing
        ref = first.setdefault(key, n)
        if ref != n:
            diff = max(abs(x - y) for x, y in zip(st["losses"], settings[ref]["losses"], strict=True))
            result["loss_curve_max_abs_diff"][f"{n} vs {ref}"] = round(diff, 6)


def main(argv: list[str] | None = None) -> dict:
    args, names = parse_args(argv)
    device = devices.pick(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.set_float32_matmul_precision("high")
    probe = shapes.build_model(args.shapes, seed=args.seed, device="cpu", dtype=torch.float32)
    packings = {SETTINGS[n]["packing"] for n in names}
    data, data_seconds = make_batches(args, probe, packings | ({"fill"} if "concat" in packings else set()))
    concat_is_fill = "concat" in data and same_batches(data["concat"], data["fill"])
    del probe
    peak = measure_peak(device)
    result = {
        "benchmark": "train_step",
        "shapes": args.shapes,
        **common.device_info(device),
        "precision": "bf16-true" if dtype == torch.bfloat16 else "fp32",
        "lora": PRODUCT["lora"],
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "steps": args.steps,
        "warmup": args.warmup,
        "padding_fraction": {
            p: round(float(sum(b["key_padding_mask"].float().mean() for b in data[p]) / len(data[p])), 4)
            for p in data_seconds
        },
        "data_seconds_per_batch": data_seconds,
        "concat_rows_equal_fill_rows": concat_is_fill if "concat" in data else None,
        "peak_tflops_measured": round(peak["measured"] / 1e12, 2),
        "peak_matmul": peak["matmul"],
        "peak_tflops_spec": round(peak["spec"] / 1e12, 1) if peak["spec"] else None,
        "flop_count": "bench/flops.py: MFU = frozen-base LoRA model FLOPs, HFU = FLOPs the setting computes",
        "settings": {},
    }
    heldout_model, _ = build("upstream", SETTINGS["upstream"], args, device, dtype)  # LoRA B = 0: the base model
    result["heldout_loss_before"] = round(heldout_loss(heldout_model, data["heldout"], device), 6)
    del heldout_model
    for name in names:
        result["settings"][name] = run_setting(name, SETTINGS[name], args, device, dtype, data, peak)
    failed = {n: s["error"] for n, s in result["settings"].items() if "error" in s}
    if failed:
        result["failed"] = failed
    settings = {n: s for n, s in result["settings"].items() if "error" not in s}
    compare(result, settings, concat_is_fill, device)
    fastest_step = min(s["step_seconds_mean"] for s in settings.values())
    # the DataLoader's workers (train.num_workers, 2 by default) make batches in parallel with the GPU's step
    result["data_loader_ok"] = {p: v < 0.5 * fastest_step for p, v in data_seconds.items()}
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

    ok = {n: s for n, s in result["settings"].items() if "losses" in s}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, s in ok.items():
        ax.plot(s["losses"], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"loss, {result['shapes']} on {result.get('gpu', result['device'])}")
    ax.legend(fontsize=7)
    bx.barh(list(ok)[::-1], [s["tokens_per_second"] for s in ok.values()][::-1])
    for i, s in enumerate(list(ok.values())[::-1]):
        bx.text(s["tokens_per_second"], i, f" MFU {s['mfu']:.0%} HFU {s['hfu']:.0%}", va="center", fontsize=7)
    bx.set_xlabel("tokens/s")
    path = Path(out).with_suffix(".png") if out else Path("bench-results") / f"train-{result['shapes']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    result["plot"] = str(path)


if __name__ == "__main__":
    main()
