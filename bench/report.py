"""Markdown tables from benchmark JSON files, settings side by side with ratios.

python -m bench.report bench-results/*.json        # (make bench-report)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _device(r: dict) -> str:
    return r.get("gpu") or f"{r.get('cpu', 'cpu')} x{r.get('threads', '?')}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return out


TRAIN_COLUMNS = [
    "setting",
    "tokens/s",
    "x upstream",
    "step s",
    "MFU",
    "HFU",
    "MFU (spec peak)",
    "peak GB",
    "packing",
    "mask",
    "ckpt layers",
    "CE",
    "compile",
    "held-out loss after",
]


def _train_row(name: str, s: dict, ratios: dict) -> list:
    o = s["options"]
    if "error" in s:
        return [name, s["error"]] + [None] * (len(TRAIN_COLUMNS) - 2)
    ce = "full logits" if o.get("full_logits") else f"chunks of {o['ce_chunk']}" if o["ce_chunk"] else "targeted rows"
    ckpt = o["checkpointed_layers"]
    return [
        name,
        s["tokens_per_second"],
        ratios.get(name, {}).get("tokens_per_second", 1.0 if name == "upstream" else None),
        s["step_seconds_mean"],
        s.get("mfu"),
        s.get("hfu"),
        s.get("mfu_spec_peak"),
        s["peak_memory_gb"],
        o["packing"],
        o.get("mask", "auto"),
        f"{ckpt} (reentrant)" if o["gradient_checkpointing"] == "reentrant" else ckpt,
        ce,
        o["compile"] or "",
        s["heldout_loss_after"],
    ]


def train(r: dict) -> list[str]:
    ratios = r.get("ratios_vs_upstream", {})
    rows = [_train_row(name, s, ratios) for name, s in r["settings"].items()]
    head = (
        f"### train step: {r['shapes']} on {_device(r)} ({r['precision']}, torch {r['torch']}), batch "
        f"{r['batch_size']} x {r['max_length']}, {r['steps']} timed steps"
    )
    peak = f"peak: {r.get('peak_tflops_measured')} TFLOP/s measured ({r.get('peak_matmul')})"
    if r.get("peak_tflops_spec"):
        peak += f", {r['peak_tflops_spec']} spec"
    lines = [head, "", *_table(TRAIN_COLUMNS, rows), ""]
    lines.append(
        f"{peak}; held-out loss before training {r.get('heldout_loss_before')}; padding: {r['padding_fraction']}; "
        f"data s/batch (one worker): {r['data_seconds_per_batch']}; upstream's concatenated rows = fill rows: "
        f"{r.get('concat_rows_equal_fill_rows')}; loss curves (same batches) max diff: {r['loss_curve_max_abs_diff']}"
    )
    return lines


def extract(r: dict) -> list[str]:
    rows = []
    for key in ("one_at_a_time", "bucketed_batches", "bucketed_batches_tf32", "bucketed_batches_bf16", "capped"):
        if key in r:
            s = r[key]
            rows.append([key, s["real_time_factor"], s["seconds"], s["peak_memory_gb"], s["oom_backoffs"]])
    lines = [f"### extraction: {r['shapes']} codec on {_device(r)}, {r['clips']} clips", ""]
    lines += _table(["mode", "x real time", "seconds", "peak GB", "OOM back-offs"], rows)
    notes = [f"batched speed-up {r['speedup_batched']}x, codes identical: {r['codes_identical_batched_vs_single']}"]
    for p in ("tf32", "bf16"):
        if f"bucketed_batches_{p}" in r:
            notes.append(f"{p} code agreement with fp32: {r[f'bucketed_batches_{p}']['codes_agreement_vs_fp32']}")
    if "capped" in r:
        notes.append(f"capped to {r['capped']['memory_fraction']}: codes identical {r['capped']['codes_identical']}")
    return [*lines, "", "; ".join(notes)]


def synth(r: dict) -> list[str]:
    m = r["mean"]
    lines = [f"### synthesis: {r['shapes']} on {_device(r)} ({r['precision']}), {len(r['sentences'])} sentences", ""]
    return lines + _table(
        ["first audio s", "RTF generate", "RTF total", "frames/s"],
        [[m["first_audio_latency_s"], m["rtf_generate"], m["rtf_total"], m["frames_per_second"]]],
    )


def fullsize(r: dict) -> list[str]:
    rows = [[n, "yes" if s["passed"] else f"NO (exit {s['exit_code']})", s["seconds"]] for n, s in r["stages"].items()]
    lines = [f"### {r['model']} (random weights) through the product's stages", ""]
    lines += _table(["stage", "passed", "seconds"], rows)
    t, v = r.get("train_summary") or {}, r.get("merge_validation") or {}
    plan = t.get("gradient_checkpointing") or {}
    notes = [f"model written in {r['model_write_seconds']} s"]
    if t:
        notes.append(f"train: {t.get('steps')} steps on {t.get('device')} ({t.get('precision')}), checkpointing {plan}")
    if v:
        notes.append(f"merge: max output difference {v.get('max_rel_diff')} (tolerance {v.get('rtol')})")
    return [*lines, "", "; ".join(notes)]


KINDS = {"train_step": train, "extract": extract, "synthesize": synth, "fullsize": fullsize}


def render(paths: list[Path]) -> str:
    parts = []
    for path in paths:
        r = json.loads(path.read_text())
        kind = KINDS.get(r.get("benchmark"))
        if kind is None:
            raise SystemExit(f"{path}: not a fishtune benchmark result (no known 'benchmark' field)")
        parts.append("\n".join([*kind(r), "", f"({path.name})"]))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description="benchmark JSON -> markdown")
    ap.add_argument("files", nargs="+", type=Path)
    text = render(ap.parse_args(argv).files)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
