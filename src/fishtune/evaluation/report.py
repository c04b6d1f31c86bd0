"""The evaluation report: the dict written as ``report.json`` (:func:`build`), and ``index.html`` (one
self-contained file: inline CSS, SVG plots, audio as data URIs, no script, nothing fetched) rendered from it."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fishtune.evaluation import pick
from fishtune.evaluation.plan import Item, System
from fishtune.evaluation.scoring import aggregate
from fishtune.layout import RunLayout
from fishtune.runstate import write_json_atomic, write_text_atomic

CURVES = (("loss", "total loss"), ("base_loss", "token head (text/semantic ids)"), ("semantic_loss", "codebooks"))


def loss_curves(metrics_path: Path) -> dict:
    """``train/metrics.jsonl`` -> {"train": {key: [[step, value], ...]}, "val": {...}} (last entry per step wins)."""
    out = {"train": {k: {} for k, _ in CURVES}, "val": {k: {} for k, _ in CURVES}}
    if not metrics_path.is_file():
        return {}
    for line in metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if not isinstance(row, dict) or "step" not in row:
            continue
        for part in ("train", "val"):
            for key, _ in CURVES:
                v = row.get(f"{part}/{key}")
                if isinstance(v, int | float) and math.isfinite(v):
                    out[part][key][int(row["step"])] = float(v)
    return {p: {k: sorted(v.items()) for k, v in d.items()} for p, d in out.items()}


def curves_svg(curves: dict, marks: dict[str, int] | None = None) -> str | None:
    """Three panels (total, token head, codebooks), train and validation, as an inline SVG (matplotlib)."""
    if not curves or not any(curves[p][k] for p in curves for k, _ in CURVES):
        return None
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "fishtune"}):
        fig = Figure(figsize=(11, 3.0), layout="constrained")
        axes = fig.subplots(1, len(CURVES))
        for ax, (key, title) in zip(axes, CURVES, strict=True):
            for part, style in (
                ("train", {"lw": 1.2, "color": "#1f77b4"}),
                ("val", {"lw": 1.5, "color": "#d62728", "marker": "o", "ms": 3}),
            ):
                pts = curves[part][key]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, label=part if part == "train" else "validation (held out)", **style)
            for label, step in (marks or {}).items():
                ax.axvline(step, color="#888", ls=":", lw=1)
                ax.annotate(
                    label,
                    (step, 0.03),
                    xycoords=("data", "axes fraction"),
                    xytext=(-3, 0),
                    textcoords="offset points",
                    fontsize=7,
                    color="#555",
                    rotation=90,
                    ha="right",
                    va="bottom",
                )
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("cross-entropy")
        axes[0].legend(loc="upper right", fontsize=8)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def mp3_data_uri(path: Path, bit_rate: int = 64000) -> str:
    """A wav file as an ``audio/mpeg`` data URI (torchcodec's FFmpeg encoder), for one-file reports."""
    import torch
    from torchcodec.encoders import AudioEncoder

    from fishtune.audio import read_wav

    data, sr = read_wav(path)
    if not len(data):
        data = np.zeros(int(sr) // 10, dtype=np.float32)
    enc = AudioEncoder(torch.from_numpy(np.ascontiguousarray(data))[None], sample_rate=int(sr))
    mp3 = enc.to_tensor("mp3", bit_rate=bit_rate, num_channels=1).numpy().tobytes()
    return "data:audio/mpeg;base64," + base64.b64encode(mp3).decode("ascii")


def _short(path: str, report: dict) -> str:
    """A path relative to the run directory when it is inside it (what a person recognises)."""
    return RunLayout.at(report["run_dir"]).relative(path)


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}f}"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;
max-width:1280px;padding:0 16px;color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
.meta{color:#566;margin:0 0 12px}code{background:#f2f4f7;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #dfe3e8;padding:5px 8px;vertical-align:top;
text-align:left}th{background:#f5f7fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.picked td{background:#eef8ee}tr.reference td{color:#445;background:#fafafa}
.notes{background:#fff8e6;border:1px solid #f0d89a;padding:8px 12px;border-radius:4px}.notes li{margin:2px 0}
.sample audio{width:210px;height:32px;display:block}.m{font-size:12px;color:#445;margin-top:2px}
.asr{font-size:12px;color:#667;font-style:italic;margin-top:2px;max-width:220px}
.flag{color:#b3261e;font-weight:600}.txt{max-width:300px}.norm{font-size:12px;color:#667}
.plot svg{width:100%;height:auto}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}
dt{font-weight:600}dd{margin:0}
"""


def _head(report: dict) -> list[str]:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>fishtune evaluation: {e(report['run'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Evaluation of run <code>{e(report['run'])}</code></h1>",
        f'<p class="meta">base model <code>{e(report["model"]["name"])}</code> · {report["counts"]["sentences"]} test '
        f"sentences + {report['counts']['heldout']} held-out clip(s) · {e(report['created'])} · "
        f"speaker encoder {e(report['speaker']['encoder'])} · ASR {e(report['asr']['model'] or 'none')}</p>",
    ]
    if report["notes"]:
        parts.append('<ul class="notes" id="notes">' + "".join(f"<li>{e(n)}</li>" for n in report["notes"]) + "</ul>")
    return parts


def _metrics_table(report: dict) -> list[str]:
    e = html.escape
    picked = (report.get("best_checkpoint") or {}).get("name")
    parts = [
        '<h2>Metrics</h2><table id="metrics"><thead><tr><th>system</th><th>checkpoint</th>',
        "<th>CER ↓</th><th>speaker similarity ↑</th><th>duration ratio</th><th>silence ratio</th>",
        "<th>val loss ↓</th><th>val token loss</th><th>val codebook loss</th><th>samples</th><th>flagged</th>",
        "</tr></thead><tbody>",
    ]
    for s in report["systems"]:
        m = s["metrics"]
        cls = "reference" if s["kind"] == "reference" else ("picked" if s["name"] == picked else "")
        star = " ★" if s["name"] == picked else ""
        parts.append(
            f'<tr class="{cls}" data-system="{e(s["name"])}"><td>{e(s["label"])}{star}</td>'
            f"<td>{e(s.get('checkpoint_label') or '')}</td>"
            f'<td class="num">{_fmt(m["cer"])}</td><td class="num">{_fmt(m["similarity"])}</td>'
            f'<td class="num">{_fmt(m["duration_ratio"], 2)}</td><td class="num">{_fmt(m["silence_ratio"], 2)}</td>'
            f'<td class="num">{_fmt(m["val_loss"], 4)}</td><td class="num">{_fmt(m["val_base_loss"], 4)}</td>'
            f'<td class="num">{_fmt(m["val_semantic_loss"], 4)}</td><td class="num">{m["samples"]}</td>'
            f'<td class="num">{m["flagged"]}</td></tr>'
        )
    parts.append("</tbody></table>")
    best = report.get("best_checkpoint")
    if best:
        where = _short(best["checkpoint"], report)
        parts.append(
            f'<p id="pick">★ Best checkpoint: <code>{e(where)}</code>: {e(best["reason"])}. '
            f"Rule: {e(best['rule'])}. <code>merge checkpoint=best</code> uses it.</p>"
        )
    return parts


def _sample_cell(r: dict | None, name: str, audio_src: Callable[[str], str]) -> str:
    e = html.escape
    if not r:
        return "<td></td>"
    flags = "".join(f' <span class="flag">{e(f)}</span>' for f in r.get("flags", []))
    metrics = (
        f"CER {_fmt(r.get('cer'), 2)} · sim {_fmt(r.get('similarity'), 2)} · "
        f"dur {_fmt(r.get('duration_ratio'), 2)} · sil {_fmt(r.get('silence_ratio'), 2)} · "
        f"{r['seconds']:.1f} s"
    )
    asr = f'<div class="asr">“{e(r["transcript"])}”</div>' if r.get("transcript") is not None else ""
    return (
        f'<td><audio controls preload="metadata" src="{audio_src(r["file"])}" '
        f'data-system="{e(name)}"></audio><div class="m">{metrics}{flags}</div>{asr}</td>'
    )


def _samples_table(report: dict, audio_src: Callable[[str], str]) -> list[str]:
    e = html.escape
    names = [s["name"] for s in report["systems"]]
    labels = {s["name"]: s["label"] for s in report["systems"]}
    parts = ['<h2>Samples</h2><table id="samples"><thead><tr><th>#</th><th>text</th>']
    parts += [f"<th>{e(labels[n])}</th>" for n in names]
    parts.append("</tr></thead><tbody>")
    for item in report["samples"]:
        parts.append(
            f'<tr class="sample" data-id="{e(item["id"])}"><td>{e(item["id"])}</td><td class="txt">{e(item["text"])}'
            f'<div class="norm">{e(item["normalized"])}</div></td>'
        )
        parts += [_sample_cell(item["results"].get(n), n, audio_src) for n in names]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return parts


def _glossary(report: dict) -> list[str]:
    return [
        "<h2>How to read this</h2><dl>",
        "<dt>CER</dt><dd>character error rate of the ASR transcript against the text, after the recipe's "
        "normaliser, lower case, punctuation removed (0 is perfect; above 1 means extra babble). The reference "
        "row is the ASR on the real held-out recordings: the floor a voice can reach.</dd>",
        "<dt>speaker similarity</dt><dd>cosine similarity of speaker embeddings with the mean of the training "
        "speaker's held-out clips (1 identical; different people typically 0.5–0.75).</dd>",
        "<dt>duration ratio</dt><dd>sample length / expected length (the real clip's, or the text at the "
        "speaker's speaking rate); far from 1 flags babble or truncation.</dd>",
        "<dt>silence ratio</dt><dd>share of 20 ms frames below the silence level; 1 is a mute output.</dd>",
        "<dt>val loss</dt><dd>Fish Speech's loss on the held-out clips (token head + codebooks).</dd>",
        "</dl>",
        f'<p class="meta">settings: <code>{html.escape(json.dumps(report["settings"], ensure_ascii=False))}</code></p>',
        "</body></html>",
    ]


def render_html(report: dict, audio_src: Callable[[str], str], plot_svg: str | None) -> str:
    """The page. ``audio_src(relative wav path)`` gives each player's ``src`` (a data URI or the relative path)."""
    parts = _head(report) + _metrics_table(report)
    parts.append('<h2>Loss curves</h2><div class="plot" id="curves">')
    parts.append(plot_svg or "<p>No training metrics (<code>train/metrics.jsonl</code>) in this run.</p>")
    parts.append("</div>")
    parts += _samples_table(report, audio_src) + _glossary(report)
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------- report.json


def _system_rows(systems: list[System], results: dict, losses: dict) -> list[dict]:
    rows = []
    if "reference" in results:
        rows.append(
            {
                "name": "reference",
                "label": "reference (real held-out clips)",
                "kind": "reference",
                "checkpoint": None,
                "checkpoint_label": "",
                "step": None,
                "metrics": aggregate(results["reference"], None),
            }
        )
    for s in systems:
        rows.append(
            {
                "name": s.name,
                "label": s.label if s.kind != "adapter" else f"fine-tuned: {s.label}",
                "kind": s.kind,
                "checkpoint": str(s.path) if s.path else None,
                "checkpoint_label": s.path.name if s.path else "",
                "step": s.step,
                "metrics": aggregate(results[s.name], losses.get(s.name)),
            }
        )
    return rows


def _best(rows: list[dict], min_similarity: float) -> dict | None:
    """The pick among the adapters (:mod:`fishtune.evaluation.pick`), or None when only the base was evaluated."""
    adapters = [r for r in rows if r["kind"] == "adapter"]
    if not adapters:
        return None
    cands = [{"name": r["name"], **r["metrics"], "checkpoint": r["checkpoint"]} for r in adapters]
    chosen, reason = pick.choose(cands, min_similarity)
    return pick.record(chosen, reason, cands, min_similarity)


def _sample_rows(items: list[Item], results: dict) -> list[dict]:
    return [
        {
            "id": i.id,
            "kind": i.kind,
            "text": i.text,
            "normalized": i.normalized,
            "expected_seconds": round(i.expected_seconds, 3) if i.expected_seconds else None,
            "clip": i.clip_id,
            "results": {name: per[i.id] for name, per in results.items() if i.id in per},
        }
        for i in items
    ]


def build(cfg: DictConfig, items: list[Item], systems: list[System], losses: dict, scored: dict, notes, cps) -> dict:
    """``report.json``: settings, per-system metrics, the best checkpoint and every sample's figures."""
    from fishtune import __version__

    rows = _system_rows(systems, scored["results"], losses)
    s = cfg.synthesize
    return {
        "run": str(cfg.run_name),
        "run_dir": str(cfg.run_dir),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "fishtune_version": __version__,
        "model": {"name": str(cfg.model.name), "path": str(cfg.model.path)},
        "counts": {
            "sentences": sum(i.kind == "sentence" for i in items),
            "heldout": sum(i.kind == "heldout" for i in items),
        },
        "settings": {
            "evaluate": OmegaConf.to_container(cfg.evaluate),
            "generation": {k: s[k] for k in ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "seed")},
            "normalizer": str(cfg.recipe.normalize),
            "chars_per_second": round(cps, 3),
        },
        "asr": scored["asr"],
        "speaker": {"encoder": scored["encoder"], "references": scored["reference_clips"]},
        "notes": notes,
        "systems": rows,
        "best_checkpoint": _best(rows, float(cfg.evaluate.pick.min_similarity)),
        "samples": _sample_rows(items, scored["results"]),
    }


def _marks(systems: list[System]) -> dict[str, int]:
    """Where the evaluated checkpoints sit on the loss curves (one label per step)."""
    marks: dict[str, int] = {}
    for s in systems:
        if s.step is not None:
            label = next((k for k, v in marks.items() if v == s.step), None)
            marks.pop(label, None)
            marks[f"{label}, {s.name}" if label else s.name] = s.step
    return marks


def write(folder: Path, run: RunLayout, report: dict, systems: list[System], embed: bool) -> None:
    """``report.json``, ``best_checkpoint.json`` (when there is a pick) and ``index.html`` into ``folder`` (the new
    ``run.report`` being assembled), with the loss curves of ``run.metrics``; ``embed``: audio inside the page."""
    if report["best_checkpoint"]:
        write_json_atomic(folder / run.best_checkpoint.name, report["best_checkpoint"])
    write_json_atomic(folder / run.report_json.name, report)
    svg = curves_svg(loss_curves(run.metrics), _marks(systems))
    src = (lambda rel: mp3_data_uri(folder / rel)) if embed else (lambda rel: rel)
    write_text_atomic(folder / run.report_html.name, render_html(report, src, svg))
