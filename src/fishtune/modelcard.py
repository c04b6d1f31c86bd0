"""Model cards for merged models and LoRA adapters."""

from __future__ import annotations

import json
from pathlib import Path

LICENCE_NOTE = (
    "**Licence.** This model is a derivative of fishaudio/openaudio-s1-mini, released under the Fish Audio "
    "Research License, which restricts use (notably commercial use); this derivative is bound by the same terms. "
    "Read the base model's licence before using or sharing it."
)


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) else "?"


def render(run_dir: Path, base_name: str, lora_settings: dict, checkpoint: str, validation: dict) -> str:
    stats = _load(run_dir / "clips" / "stats.json")
    train = _load(run_dir / "train" / "summary.json")
    hours = stats.get("durations", {}).get("hours")
    lines = [
        f"# {base_name} fine-tuned with fishtune",
        "",
        f"- Base model: `{base_name}`",
        f"- Training data: {stats.get('accepted', '?')} clips"
        + (f", {hours:.2f} h" if isinstance(hours, int | float) else "")
        + f", {len(stats.get('speakers', {})) or '?'} speaker(s)",
        f"- LoRA: r={lora_settings.get('r')}, alpha={lora_settings.get('alpha')}, "
        f"dropout={lora_settings.get('dropout')} (merged into the weights)",
        f"- Steps: {train.get('steps', '?')} of {train.get('max_steps', '?')}"
        + (" (early stopping on held-out validation loss)" if train.get("stopped_early") else ""),
        f"- Validation loss (held-out clips): base {_fmt(train.get('baseline', {}).get('base_val_loss'))}, "
        f"best {_fmt(train.get('best_val_loss'))}",
        f"- Adapter: `{checkpoint}`",
        f"- Merge check: max |merged - (base + LoRA)| output difference {validation.get('max_abs_diff', '?')}",
        "",
        "Files: `model.pth`, `config.json`, `tokenizer.tiktoken`, `special_tokens.json` (Fish Speech's layout), "
        "`codec.pth`.",
        "",
        LICENCE_NOTE,
        "",
    ]
    return "\n".join(lines)
