"""What an evaluation compares: the texts (test sentences and held-out clips) and the systems (the base model and
the adapters or merged model of ``evaluate.checkpoints``), and the fingerprint that says whether a report is
current."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fishtune import adapters, text
from fishtune.errors import InputError
from fishtune.evaluation import asr, metrics
from fishtune.layout import RunLayout
from fishtune.runstate import read_jsonl, sha256_file, sha256_json

log = logging.getLogger("fishtune.evaluate")

DEFAULT_CHARS_PER_SECOND = 14.0  # Finnish read speech; used only when there is no manifest to measure it from


@dataclass
class Item:
    id: str
    kind: str  # sentence | heldout
    text: str
    normalized: str
    expected_seconds: float | None
    clip: Path | None = None
    clip_id: str | None = None


@dataclass
class System:
    name: str
    label: str
    kind: str  # base | adapter | merged
    path: Path | None = None
    step: int | None = None


# ----------------------------------------------------------------------------------------------- texts


def sentences_file(cfg: DictConfig) -> tuple[Path | None, bool]:
    """(path, given explicitly)."""
    given = cfg.evaluate.sentences_file
    if given:
        return Path(str(given)), True
    from fishtune.config import config_dir

    return config_dir() / "eval" / f"{cfg.recipe.name}.txt", False


def read_sentences(cfg: DictConfig) -> list[str]:
    path, explicit = sentences_file(cfg)
    if not path.is_file():
        if explicit:
            raise InputError(
                f"evaluate.sentences_file {path} not found", hint="give a UTF-8 file with one sentence per line"
            )
        log.info("no test sentences for recipe %s (%s): evaluating held-out clips only", cfg.recipe.name, path)
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8", hint="re-save it as UTF-8") from err
    out = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if explicit and not out:
        raise InputError(f"{path} has no sentences", hint="one sentence per line (# starts a comment)")
    limit = int(cfg.evaluate.max_sentences)
    return out[:limit] if limit > 0 else out


def heldout_ids(split: Path) -> list[str]:
    """The held-out clip ids of ``packed/split.json`` (none before pack ran)."""
    if not split.is_file():
        return []
    try:
        ids = json.loads(split.read_text(encoding="utf-8"))["val"]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{split} is not a valid split file ({err})", hint="rerun the pack stage") from err
    return [str(i) for i in ids]


def _speaking_rate(cfg: DictConfig, rows: list[dict], notes: list[str]) -> float:
    cps = cfg.evaluate.chars_per_second
    if cps is None:
        cps = metrics.speaking_rate(rows)
        if cps is None:
            cps = DEFAULT_CHARS_PER_SECOND
            notes.append(
                f"speaking rate unknown (no clips/manifest.jsonl): expected durations assume {cps:g} characters/s"
            )
    return float(cps)


def _heldout_items(cfg: DictConfig, run: RunLayout, rows: list[dict], notes: list[str]) -> list[Item]:
    by_id = {r["id"]: r for r in rows}
    held = heldout_ids(run.split)
    n_held = int(cfg.evaluate.heldout_clips)
    chosen = [h for h in held if h in by_id][: max(0, n_held)]
    if not held:
        notes.append("no held-out clips (packed/split.json): no speaker reference, similarity and val loss skipped")
    elif not chosen:
        notes.append(f"evaluate.heldout_clips={n_held}: no speaker reference, similarity not computed")
    items = []
    for k, cid in enumerate(chosen):
        row = by_id[cid]
        clip = run.clips / row["path"]
        if not clip.is_file():
            raise InputError(f"held-out clip {clip} is missing", hint="rerun the prepare stage")
        items.append(
            Item(f"h{k + 1:02d}", "heldout", row["text"], row["text"], float(row["duration"]), clip=clip, clip_id=cid)
        )
    return items


def build_items(cfg: DictConfig, run: RunLayout, notes: list[str]) -> tuple[list[Item], float]:
    """The test sentences, then up to ``evaluate.heldout_clips`` held-out clips; and the speaking rate
    (characters per second) their expected durations assume."""
    rows = read_jsonl(run.manifest) if run.manifest.is_file() else []
    cps = _speaking_rate(cfg, rows, notes)
    normalizer = str(cfg.recipe.normalize)
    items = []
    for i, raw in enumerate(read_sentences(cfg)):
        clean = text.normalize(raw, normalizer)
        items.append(Item(f"s{i + 1:02d}", "sentence", raw, clean, len(clean) / cps))
    items += _heldout_items(cfg, run, rows, notes)
    if not items:
        raise InputError(
            "nothing to evaluate: no test sentences and no held-out clips",
            hint="run prepare/extract/pack first, or give evaluate.sentences_file",
        )
    return items, cps


# ----------------------------------------------------------------------------------------------- systems


def checkpoint_step(path: Path) -> int | None:
    try:
        meta = adapters.load_file(path)
    except InputError:
        return None
    step = meta.get("global_step", (meta.get("fishtune") or {}).get("step"))
    return step if isinstance(step, int) else None


def _merged(cfg: DictConfig) -> System:
    run = RunLayout.of(cfg)
    if not run.merged_model.is_file():
        raise InputError(
            f"evaluate.checkpoints names merged, but {run.model} has no model.pth",
            hint="run the merge stage first or drop 'merged'",
        )
    return System("merged", "merged model", "merged", run.model)


def _adapters(cfg: DictConfig, entry: str) -> list[tuple[str, str, Path]]:
    """The adapters one entry of ``evaluate.checkpoints`` names: (name, label, path) each."""
    from fishtune.generation import resolve_checkpoint
    from fishtune.training import checkpoints

    run = RunLayout.of(cfg)
    if entry == "best":
        return [("best", "best (lowest val loss)", resolve_checkpoint(cfg, "best", use_evaluation=False))]
    if entry == "last":
        return [("last", "last", resolve_checkpoint(cfg, "last"))]
    if entry == "steps":
        return [(p.stem, f"step {checkpoints.step_of(p)}", p) for p in checkpoints.list_steps(run.checkpoints)]
    if entry.isdigit() or (entry.startswith("step_") and entry[5:].isdigit()):
        n = int(entry.removeprefix("step_"))
        path = run.step_checkpoint(n)
        if not path.is_file():
            have = [checkpoints.step_of(p) for p in checkpoints.list_steps(run.checkpoints)]
            raise InputError(
                f"evaluate.checkpoints: no checkpoint for step {n} in {path.parent}",
                hint=f"use one of the kept steps {have}, best, last or a path",
            )
        return [(f"step_{n}", f"step {n}", path)]
    path = Path(entry)
    if not path.exists():
        raise InputError(
            f"evaluate.checkpoints entry {entry} does not exist",
            hint="use best, last, merged, steps, a step number or a path to a .ckpt / lora.pth",
        )
    return [(path.stem, path.name, path)]


def plan_systems(cfg: DictConfig) -> list[System]:
    """The base model, then every entry of ``evaluate.checkpoints`` (deduplicated by file)."""
    systems = [System("base", "base model", "base")]
    seen: set[Path] = set()
    entries = cfg.evaluate.checkpoints or []
    if isinstance(entries, str | int):
        entries = [entries]
    for entry in entries:
        s = str(entry).strip()
        if s == "merged":
            systems.append(_merged(cfg))
            continue
        for name, label, path in _adapters(cfg, s):
            key = Path(path).resolve()
            if key in seen:
                log.info("evaluate: %s is %s again, evaluated once", s, path)
                continue
            seen.add(key)
            while name in {x.name for x in systems}:
                name += "_"
            step = checkpoint_step(Path(path))
            if step is not None and "step" not in label:
                label = f"{label}, step {step}"
            systems.append(System(name, label, "adapter", Path(path), step))
    return systems


# ----------------------------------------------------------------------------------------------- fingerprint


def _stat(path: Path) -> list:
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), None]


def fingerprint(cfg: DictConfig, items: list[Item], systems: list[System], asr_reason: str | None) -> str:
    """Everything a report depends on: settings, texts, the systems' files, the ASR model and the held-out data."""
    s = cfg.synthesize
    gen = [int(s.max_new_tokens), float(s.temperature), float(s.top_p), float(s.repetition_penalty), int(s.seed)]
    sys_keys = []
    for x in systems:
        if x.kind == "adapter":
            sys_keys.append([x.name, sha256_file(x.path)])
        elif x.kind == "merged":
            sys_keys.append([x.name, _stat(x.path / "model.pth")])
        else:
            sys_keys.append([x.name, _stat(Path(cfg.model.path) / "model.pth")])
    asr_key = None if asr_reason else [_stat(Path(cfg.evaluate.asr_model) / n) for n in asr.NEEDED]
    val = [_stat(p) for p in sorted(RunLayout.of(cfg).shards("val").glob("*.protos"))]
    return sha256_json(
        [
            OmegaConf.to_container(cfg.evaluate),
            gen,
            [(i.id, i.text, i.clip_id, i.expected_seconds) for i in items],
            sys_keys,
            asr_key,
            val,
            str(cfg.recipe.normalize),
            _stat(Path(cfg.model.path) / "codec.pth"),
        ]
    )
