"""Model cards for merged models and LoRA adapters."""

from __future__ import annotations

import json
from pathlib import Path

from fishtune.layout import RunLayout

# Base-model licences whose terms a fine-tune inherits (model.license in configs/model/*.yaml).
LICENCES = {
    "cc-by-nc-sa-4.0": (
        "Creative Commons Attribution-NonCommercial-ShareAlike 4.0 (CC-BY-NC-SA-4.0)",
        "https://creativecommons.org/licenses/by-nc-sa/4.0/",
        "no commercial use; credit the base model; share derivatives only under the same licence",
    ),
}


def licence_note(license_id: str | None, base: str) -> str:
    """The licence paragraph of every card: what the base model's licence is and that this derivative inherits it."""
    name, link, terms = LICENCES.get(str(license_id or "").lower(), (license_id, None, None))
    if not name:
        return f"**Licence.** Derived from {base}; read the base model's licence before using or sharing it."
    return (
        f"**Licence.** Derived from {base}, which is licensed under {name}"
        + (f" ({link})" if link else "")
        + ". This model and its adapter inherit that licence"
        + (f": {terms}." if terms else ".")
    )


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) else "?"


def render(
    run: RunLayout, base_name: str, lora_settings: dict, checkpoint: str, validation: dict, license_id: str | None
) -> str:
    stats = _load(run.stats)
    train = _load(run.train_summary)
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
        f"- Merge check: max |merged - (base + LoRA)| output difference {validation.get('max_rel_diff', '?')} "
        f"of the outputs' magnitude (tolerance {validation.get('rtol', '?')})",
        "",
        "Files: `model.pth`, `config.json`, `tokenizer.tiktoken`, `special_tokens.json` (Fish Speech's layout), "
        "`codec.pth`.",
        "",
        licence_note(license_id, base_name),
        "",
    ]
    return "\n".join(lines)


def _last_train_loss(path: Path) -> float | None:
    """The last ``train/loss`` in ``train/metrics.jsonl``."""
    last = None
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row.get("train/loss"), int | float):
                last = row["train/loss"]
    except OSError:
        return None
    return last


def _hub_metadata(base_repo: str | None, license_id: str | None, language: str | None) -> list[str]:
    """The card's YAML header: the inherited licence, base model, language and tags."""
    lic = str(license_id or "").lower()
    meta = ["---", f"license: {lic}"] if lic in LICENCES else ["---", "license: other"]
    if base_repo:
        meta += [f"base_model: {base_repo}"]
        meta += [] if lic in LICENCES else [f"license_link: https://huggingface.co/{base_repo}"]
    if language:
        meta += ["language:", f"- {language}"]
    tags = ["fish-speech", "text-to-speech", "lora", "fishtune"]
    return [*meta, "pipeline_tag: text-to-speech", "tags:", *[f"- {t}" for t in tags], "---"]


def render_hub_card(
    run: RunLayout,
    *,
    repo_id: str,
    base_repo: str | None,
    base_revision: str | None,
    base_name: str,
    language: str | None,
    lora_settings: dict,
    files: list[str],
    license_id: str | None = None,
    cost: str | None = None,
) -> str:
    """The README.md of a published repo: Hub metadata, base model, data hours, steps, losses, licence note."""
    stats = _load(run.stats)
    train = _load(run.train_summary)
    hours = stats.get("durations", {}).get("hours")
    speakers = len(stats.get("speakers", {})) or "?"
    base_loss = train.get("baseline", {}).get("base_val_loss")
    meta = _hub_metadata(base_repo, license_id, language)
    base = f"`{base_repo or base_name}`" + (f" (revision `{base_revision}`)" if base_revision else "")
    rows = [
        ("Base model", base),
        ("Language", language or "?"),
        (
            "Training data",
            f"{stats.get('accepted', '?')} clips"
            + (f", {hours:.2f} hours" if isinstance(hours, int | float) else "")
            + f", {speakers} speaker(s)",
        ),
        ("Held-out validation clips", str(_load(run.packed_summary).get("val", {}).get("clips", "?"))),
        (
            "Steps",
            f"{train.get('steps', '?')} of {train.get('max_steps', '?')}"
            + (" (early stopping on held-out loss)" if train.get("stopped_early") else ""),
        ),
        ("Validation loss (held-out)", f"base {_fmt(base_loss)} -> best {_fmt(train.get('best_val_loss'))}"),
        ("Final training loss", _fmt(_last_train_loss(run.metrics))),
        (
            "LoRA",
            f"r={lora_settings.get('r')}, alpha={lora_settings.get('alpha')}, dropout={lora_settings.get('dropout')}",
        ),
        ("Precision / device", f"{train.get('precision', '?')} on {train.get('device', '?')}"),
    ]
    if cost:
        rows.append(("Estimated compute cost", cost))
    lines = [
        *meta,
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A LoRA fine-tune of {base} for {language or 'a new language'} made with fishtune "
        "(reproducible Fish Speech fine-tuning). The root of this repository is the merged, standalone model in "
        "Fish Speech's layout; the adapter alone is in `lora/`.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Files",
        "",
        *[f"- `{f}`" for f in files],
        "",
        "## Licence",
        "",
        licence_note(license_id, base_repo or base_name),
        "",
    ]
    return "\n".join(lines)
