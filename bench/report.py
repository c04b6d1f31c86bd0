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


def train(r: dict) -> list[str]:
    ratios = r.get("ratios_vs_upstream", {})
    rows = []
    for name, s in r["settings"].items():
        o = s["options"]
        if "error" in s:
            rows.append([name, s["error"]] + [None] * 10)
            continue
        rows.append(
            [
                name,
                s["tokens_per_second"],
                ratios.get(name, {}).get("tokens_per_second", 1.0 if name == "upstream" else None),
                s["step_seconds_mean"],
                s.get("mfu_6n"),
                s.get("mfu_4n_lora"),
                s["peak_memory_gb"],
                o["packing"],
                o["checkpointed_layers"],
                o["ce_chunk"],
                o["compile"] or "",
                s["heldout_loss_after"],
            ]
        )
    head = (
        f"### train step: {r['shapes']} on {_device(r)} ({r['precision']}), batch {r['batch_size']} x "
        f"{r['max_length']}, {r['steps']} timed steps"
    )
    lines = [head, ""]
    lines += _table(
        [
            "setting",
            "tokens/s",
            "x upstream",
            "step s",
            "MFU 6N",
            "MFU 4N",
            "peak GB",
            "packing",
            "ckpt layers",
            "CE chunk",
            "compile",
            "held-out loss after",
        ],
        rows,
    )
    lines += [
        "",
        f"padding: {r['padding_fraction']}; data s/batch (one worker): {r['data_seconds_per_batch']}; "
        f"loss curves (same batches) max diff: {r['loss_curve_max_abs_diff']}",
    ]
    return lines


def extract(r: dict) -> list[str]:
    rows = []
    for key in ("one_at_a_time", "bucketed_batches", "bucketed_batches_bf16", "capped"):
        if key in r:
            s = r[key]
            rows.append([key, s["real_time_factor"], s["seconds"], s["peak_memory_gb"], s["oom_backoffs"]])
    lines = [f"### extraction: {r['shapes']} codec on {_device(r)}, {r['clips']} clips", ""]
    lines += _table(["mode", "x real time", "seconds", "peak GB", "OOM back-offs"], rows)
    notes = [f"batched speed-up {r['speedup_batched']}x, codes identical: {r['codes_identical_batched_vs_single']}"]
    if "bucketed_batches_bf16" in r:
        notes.append(f"bf16 code agreement with fp32: {r['bucketed_batches_bf16']['codes_agreement_vs_fp32']}")
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


KINDS = {"train_step": train, "extract": extract, "synthesize": synth}


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
