"""Stage ``evaluate``: is the voice good? Base model vs fine-tuned checkpoint(s), side by side, in a report.

Texts: the fixed test sentences (``configs/eval/<recipe>.txt`` or ``evaluate.sentences_file``: numbers,
abbreviations) and the transcripts of up to ``evaluate.heldout_clips`` held-out clips (``packed/split.json``),
whose recordings are the references. Every system (the base model, then each of ``evaluate.checkpoints`` folded
into it) synthesises every text with the same seeds and generation settings as ``synthesize``. Per sample and
averaged: CER from Whisper (skipped with a note when ``evaluate.asr_model`` is absent), speaker similarity to the
held-out clips (resemblyzer), duration and silence ratios; per system the validation loss on the held-out split.

Outputs (``evaluate.output``, default ``report/``; the folder is replaced as a whole): ``index.html``
(self-contained), ``report.json``, ``audio/<system>/<id>.wav``, ``best_checkpoint.json`` (the pick by
:mod:`fishtune.evaluation.pick`'s rule, used by ``merge checkpoint=best``). Rerunning with the same inputs and
settings is a no-op.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fishtune import adapters, audio, devices, text
from fishtune.errors import InputError
from fishtune.evaluation import asr, metrics, pick
from fishtune.evaluation import report as report_mod
from fishtune.progress import Progress
from fishtune.runstate import (
    RunState,
    atomic_dir,
    check_replaceable,
    clean_leftovers,
    read_jsonl,
    sha256_file,
    sha256_json,
    write_json_atomic,
    write_text_atomic,
)

log = logging.getLogger("fishtune.evaluate")

DEFAULT_CHARS_PER_SECOND = 14.0  # Finnish read speech; used only when there is no manifest to measure it from
MUTE, LONG, SHORT = 0.9, 2.0, 0.5  # flag thresholds: silence ratio, duration ratio above / below


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


# ----------------------------------------------------------------------------------------------- inputs


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


def manifest_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "clips" / "manifest.jsonl"
    return read_jsonl(path) if path.is_file() else []


def heldout_ids(run_dir: Path) -> list[str]:
    import json

    path = run_dir / "packed" / "split.json"
    if not path.is_file():
        return []
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))["val"]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path} is not a valid split file ({err})", hint="rerun the pack stage") from err
    return [str(i) for i in ids]


def build_items(cfg: DictConfig, notes: list[str]) -> tuple[list[Item], float]:
    run_dir = Path(cfg.run_dir)
    normalizer = str(cfg.recipe.normalize)
    rows = manifest_rows(run_dir)
    cps = cfg.evaluate.chars_per_second
    if cps is None:
        cps = metrics.speaking_rate(rows)
        if cps is None:
            cps = DEFAULT_CHARS_PER_SECOND
            notes.append(
                f"speaking rate unknown (no clips/manifest.jsonl): expected durations assume {cps:g} characters/s"
            )
    cps = float(cps)
    items = []
    for i, raw in enumerate(read_sentences(cfg)):
        clean = text.normalize(raw, normalizer)
        items.append(Item(f"s{i + 1:02d}", "sentence", raw, clean, len(clean) / cps))
    by_id = {r["id"]: r for r in rows}
    held = heldout_ids(run_dir)
    n_held = int(cfg.evaluate.heldout_clips)
    chosen = [h for h in held if h in by_id][: max(0, n_held)]
    if not held:
        notes.append("no held-out clips (packed/split.json): no speaker reference, similarity and val loss skipped")
    elif not chosen:
        notes.append(f"evaluate.heldout_clips={n_held}: no speaker reference, similarity not computed")
    for k, cid in enumerate(chosen):
        row = by_id[cid]
        clip = run_dir / "clips" / row["path"]
        if not clip.is_file():
            raise InputError(f"held-out clip {clip} is missing", hint="rerun the prepare stage")
        items.append(
            Item(f"h{k + 1:02d}", "heldout", row["text"], row["text"], float(row["duration"]), clip=clip, clip_id=cid)
        )
    if not items:
        raise InputError(
            "nothing to evaluate: no test sentences and no held-out clips",
            hint="run prepare/extract/pack first, or give evaluate.sentences_file",
        )
    return items, cps


def checkpoint_step(path: Path) -> int | None:
    try:
        meta = adapters.load_file(path)
    except InputError:
        return None
    step = meta.get("global_step", (meta.get("fishtune") or {}).get("step"))
    return step if isinstance(step, int) else None


def plan_systems(cfg: DictConfig) -> list[System]:
    """The base model, then every entry of ``evaluate.checkpoints`` (deduplicated by file)."""
    from fishtune.generation import resolve_checkpoint
    from fishtune.training import checkpoints

    train_dir = Path(cfg.run_dir) / "train"
    systems = [System("base", "base model", "base")]
    seen: set[Path] = set()
    entries = cfg.evaluate.checkpoints or []
    if isinstance(entries, str | int):
        entries = [entries]
    for entry in entries:
        s = str(entry).strip()
        found: list[tuple[str, str, Path]] = []  # (name, label, path)
        if s == "best":
            found.append(("best", "best (lowest val loss)", resolve_checkpoint(cfg, "best", use_evaluation=False)))
        elif s == "last":
            found.append(("last", "last", resolve_checkpoint(cfg, "last")))
        elif s == "merged":
            folder = Path(cfg.merge.output)
            if not (folder / "model.pth").is_file():
                raise InputError(
                    f"evaluate.checkpoints names merged, but {folder} has no model.pth",
                    hint="run the merge stage first or drop 'merged'",
                )
            systems.append(System("merged", "merged model", "merged", folder))
            continue
        elif s == "steps":
            found += [
                (p.stem, f"step {checkpoints.step_of(p)}", p) for p in checkpoints.list_steps(train_dir / "checkpoints")
            ]
        elif s.isdigit() or (s.startswith("step_") and s[5:].isdigit()):
            n = int(s.removeprefix("step_"))
            path = train_dir / "checkpoints" / f"step_{n:09d}.ckpt"
            if not path.is_file():
                have = [checkpoints.step_of(p) for p in checkpoints.list_steps(train_dir / "checkpoints")]
                raise InputError(
                    f"evaluate.checkpoints: no checkpoint for step {n} in {path.parent}",
                    hint=f"use one of the kept steps {have}, best, last or a path",
                )
            found.append((f"step_{n}", f"step {n}", path))
        else:
            path = Path(s)
            if not path.exists():
                raise InputError(
                    f"evaluate.checkpoints entry {s} does not exist",
                    hint="use best, last, merged, steps, a step number or a path to a .ckpt / lora.pth",
                )
            found.append((path.stem, path.name, path))
        for name, label, path in found:
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


def _stat(path: Path) -> list:
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), None]


def fingerprint(cfg: DictConfig, items: list[Item], systems: list[System], asr_reason: str | None) -> str:
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
    val = [_stat(p) for p in sorted((Path(cfg.run_dir) / "packed" / "val").glob("*.protos"))]
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


# ----------------------------------------------------------------------------------------------- measuring


def load_system(cfg: DictConfig, system: System):
    from fishtune.generation import load_model
    from fishtune.modeling.llm import load_llm

    if system.kind == "base":
        return load_llm(cfg.model.path)
    if system.kind == "merged":
        return load_llm(system.path)
    model, _ = load_model(cfg, "lora", checkpoint=system.path)
    return model


def val_set(cfg: DictConfig, model):
    """The held-out split as training validates on it, or None without one (same for every system)."""
    from fishtune.training.samples import ValSet, load_groups

    val_dir = Path(cfg.run_dir) / "packed" / "val"
    if not any(val_dir.glob("*.protos")):
        return None
    tok, nc = model.tokenizer, model.config.num_codebooks
    max_len = min(int(cfg.train.max_length), int(model.config.max_seq_len))
    return ValSet(load_groups(val_dir, nc), tok, nc, max_len)


@torch.no_grad()
def val_losses(cfg: DictConfig, ds, model, device, dtype) -> dict | None:
    """Loss and its two parts on the held-out split, batch-size-weighted like the training validation."""
    from torch.utils.data import DataLoader

    from fishtune.training import forward as fw
    from fishtune.training.samples import Collate

    if ds is None:
        return None
    tok = model.tokenizer
    loader = DataLoader(
        ds, batch_size=int(cfg.train.val_batch_size), collate_fn=Collate(tok.get_token_id("<|end_of_text|>"))
    )
    totals = np.zeros(3)
    n = 0
    model.eval()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        bs = batch["inputs"].shape[0]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = fw.loss(model, batch)
        totals += bs * np.array([float(out.loss), float(out.base_loss), float(out.semantic_loss)])
        n += bs
    if not n:
        return None
    loss, base, sem = (totals / n).tolist()
    return {"val_loss": loss, "val_base_loss": base, "val_semantic_loss": sem}


def synthesize_all(cfg, systems, items, audio_dir: Path, device, progress) -> tuple[dict, dict]:
    """Every system x item -> wav files; returns ({system: {item: info}}, {system: val losses})."""
    from fishtune.generation import generate_codes
    from fishtune.modeling import codec as codec_mod

    s = cfg.synthesize
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    codec = codec_mod.load_codec(cfg.model.path, device=device)
    sr = int(codec.sample_rate)
    results: dict[str, dict] = {}
    losses: dict[str, dict | None] = {}
    held_out = None
    for system in systems:
        model = load_system(cfg, system).to(device=device, dtype=dtype).eval()
        if system is systems[0]:  # read and tokenised once: every system has the base model's tokenizer
            held_out = val_set(cfg, model)
        losses[system.name] = val_losses(cfg, held_out, model, device, dtype)
        results[system.name] = {}
        for i, item in enumerate(items):
            torch.manual_seed(int(s.seed) + i)
            t0 = time.perf_counter()
            codes = generate_codes(model, device, item.normalized, s)
            empty = codes is None or codes.shape[1] == 0
            wave = np.zeros(sr // 10, dtype=np.float32) if empty else codec_mod.decode(codec, codes, device).numpy()
            rel = f"audio/{system.name}/{item.id}.wav"
            audio.save_wav(audio_dir.parent / rel, wave.astype(np.float32), sr)
            results[system.name][item.id] = {
                "file": rel,
                "seconds": round(len(wave) / sr, 3),
                "frames": 0 if empty else int(codes.shape[1]),
                "compute_seconds": round(time.perf_counter() - t0, 3),
                "no_audio": empty,
            }
            progress.update(1, amount=len(wave) / sr)
        del model
        gc.collect()
        devices.empty_cache()
    del codec
    return results, losses


def score(cfg, items, results, out_dir: Path, device, notes: list[str]) -> dict:
    """Speaker similarity, ASR + CER, duration and silence ratios; fills ``results`` in place, adds 'reference'."""
    ev = cfg.evaluate
    normalizer = str(cfg.recipe.normalize)
    silence_db = float(ev.silence_db)
    held = [i for i in items if i.kind == "heldout"]
    # the reference recordings, copied so that the report folder stands alone
    ref_results = {}
    for item in held:
        rel = f"audio/reference/{item.id}.wav"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.clip, out_dir / rel)
        ref_results[item.id] = {"file": rel, "seconds": round(item.expected_seconds, 3), "clip": item.clip_id}
    if held:
        results = {"reference": ref_results, **results}

    log.info("speaker similarity: resemblyzer on %s", device)
    enc = metrics.SpeakerEncoder(str(device))
    ref_emb = {}
    for item in held:
        wave, sr = audio.read_wav(item.clip)
        ref_emb[item.id] = enc.embed(wave, sr, silence_db)
    reason = asr.unavailable_reason(ev.asr_model)
    at_16k: dict[int, np.ndarray] = {}  # id(result) -> its wave at Whisper's rate, read once for both models
    reference = metrics.centroid(list(ref_emb.values()))
    if held and reference is None:
        notes.append("the held-out clips have no audible sound: speaker similarity not computed")
    for system, per_item in results.items():
        for item in items:
            r = per_item.get(item.id)
            if r is None:
                continue
            wave, sr = audio.read_wav(out_dir / r["file"])
            r["silence_ratio"] = round(metrics.silence_ratio(wave, sr, silence_db), 4)
            if not reason:
                at_16k[id(r)] = metrics.resample(wave, sr, asr.SAMPLE_RATE)
            if system == "reference":
                others = [e for k, e in ref_emb.items() if k != item.id]
                r["similarity"] = metrics.similarity(ref_emb[item.id], metrics.centroid(others)) if others else None
                r["duration_ratio"] = None
            else:
                r["similarity"] = metrics.similarity(enc.embed(wave, sr, silence_db), reference)
                r["duration_ratio"] = metrics.duration_ratio(r["seconds"], item.expected_seconds)
            for key in ("similarity", "duration_ratio"):
                if r[key] is not None:
                    r[key] = round(r[key], 4)
    encoder = f"{enc.name} {enc.version}"
    del enc

    asr_info = {"model": None, "available": False, "note": None}
    if reason:
        notes.append(f"CER not computed: {reason}")
        asr_info["note"] = reason
        log.warning("evaluate: CER skipped: %s", reason)
    else:
        language = ev.asr_language or OmegaConf.select(cfg, "recipe.language", default=None)
        whisper = asr.Whisper(ev.asr_model, device, language, int(ev.asr_max_new_tokens))
        asr_info.update(model=str(ev.asr_model), available=True, language=whisper.language)
        log.info("ASR: Whisper from %s on %s (language %s)", ev.asr_model, device, whisper.language or "auto")
        todo = [(r, item) for per_item in results.values() for item in items if (r := per_item.get(item.id))]
        progress = Progress("evaluate asr", len(todo), unit="samples", logger=log)
        for r, item in todo:
            r["transcript"] = whisper.transcribe(at_16k.pop(id(r)))
            c = metrics.cer(item.text, r["transcript"], normalizer)
            r["cer"] = round(c, 4) if c is not None else None
            progress.update(1)
        progress.close()
        del whisper
    for per_item in results.values():
        for r in per_item.values():
            r.setdefault("cer", None)
            r.setdefault("transcript", None)
            r["flags"] = flags(r)
    devices.empty_cache()
    return {"results": results, "asr": asr_info, "reference_clips": [i.clip_id for i in held], "encoder": encoder}


def flags(r: dict) -> list[str]:
    out = []
    if r.get("no_audio"):
        out.append("no audio")
    if (r.get("silence_ratio") or 0) >= MUTE:
        out.append("mute")
    d = r.get("duration_ratio")
    if d is not None and d > LONG:
        out.append("too long")
    if d is not None and d < SHORT:
        out.append("too short")
    return out


def aggregate(per_item: dict, losses: dict | None) -> dict:
    rows = list(per_item.values())
    out = {
        k: (round(v, 4) if (v := metrics.mean(r.get(k) for r in rows)) is not None else None)
        for k in ("cer", "similarity", "duration_ratio", "silence_ratio")
    }
    for k in ("val_loss", "val_base_loss", "val_semantic_loss"):
        out[k] = round(losses[k], 5) if losses else None
    out["samples"] = len(rows)
    out["flagged"] = sum(1 for r in rows if r.get("flags"))
    return out


# ----------------------------------------------------------------------------------------------- the stage


def run(cfg: DictConfig) -> dict:
    if not sys.stdout.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.time()
    ev = cfg.evaluate
    run_dir = Path(cfg.run_dir)
    out_dir = Path(ev.output)
    check_replaceable(out_dir, "evaluate.output folder")  # before any work
    device = devices.pick(str(ev.device))
    min_sim = float(ev.pick.min_similarity)  # in [0, 1]: fishtune.schema
    notes: list[str] = []
    items, cps = build_items(cfg, notes)
    systems = plan_systems(cfg)
    fp = fingerprint(cfg, items, systems, asr.unavailable_reason(ev.asr_model))
    state = RunState(run_dir)
    if state.is_current("evaluate", fp) and (out_dir / "index.html").is_file() and (out_dir / "report.json").is_file():
        log.info("evaluate: up to date (same models, texts and settings): %s", out_dir / "index.html")
        return {"report": str(out_dir / "index.html"), "skipped": True}

    log.info(
        "evaluating %s on %d texts (%d test sentences, %d held-out clips) on %s",
        ", ".join(s.name for s in systems),
        len(items),
        sum(i.kind == "sentence" for i in items),
        sum(i.kind == "heldout" for i in items),
        device,
    )
    clean_leftovers(out_dir)  # temp folders of a killed evaluation
    with atomic_dir(out_dir, what="evaluate.output folder") as tmp:
        progress = Progress("evaluate", len(systems) * len(items), unit="samples", amount_unit="audio s", logger=log)
        results, losses = synthesize_all(cfg, systems, items, tmp / "audio", device, progress)
        progress.close()
        scored = score(cfg, items, results, tmp, device, notes)
        results = scored["results"]
        report = build_report(cfg, items, systems, results, losses, scored, notes, cps, min_sim)
        if report["best_checkpoint"]:
            write_json_atomic(tmp / pick.PICK_FILE, report["best_checkpoint"])
        write_json_atomic(tmp / "report.json", report)
        curves = report_mod.loss_curves(run_dir / "train" / "metrics.jsonl")
        marks: dict[str, int] = {}
        for s in systems:
            if s.step is not None:
                label = next((k for k, v in marks.items() if v == s.step), None)
                marks.pop(label, None)
                marks[f"{label}, {s.name}" if label else s.name] = s.step
        svg = report_mod.curves_svg(curves, marks)
        embed = bool(ev.embed_audio)
        src = (lambda rel: report_mod.mp3_data_uri(tmp / rel)) if embed else (lambda rel: rel)
        write_text_atomic(tmp / "index.html", report_mod.render_html(report, src, svg))

    for s in report["systems"]:
        m = s["metrics"]
        log.info(
            "evaluate: %-12s CER %s  similarity %s  duration ratio %s  silence ratio %s  val loss %s%s",
            s["name"],
            _f(m["cer"]),
            _f(m["similarity"]),
            _f(m["duration_ratio"]),
            _f(m["silence_ratio"]),
            _f(m["val_loss"]),
            f"  ({m['flagged']} flagged)" if m["flagged"] else "",
        )
    if report["best_checkpoint"]:
        log.info(
            "evaluate: best checkpoint %s (%s)",
            report["best_checkpoint"]["checkpoint"],
            report["best_checkpoint"]["reason"],
        )
    for note in notes:
        log.warning("evaluate: %s", note)
    log.info("evaluate: report %s", out_dir / "index.html")
    state.record(
        "evaluate",
        fingerprint=fp,
        started=started,
        report=str(out_dir / "index.html"),
        best_checkpoint=(report["best_checkpoint"] or {}).get("checkpoint"),
    )
    return {
        "report": str(out_dir / "index.html"),
        "systems": {s["name"]: s["metrics"] for s in report["systems"]},
        "best_checkpoint": report["best_checkpoint"],
    }


def _f(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def build_report(cfg, items, systems, results, losses, scored, notes, cps, min_sim) -> dict:
    from fishtune import __version__

    sys_rows = []
    if "reference" in results:
        sys_rows.append(
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
        sys_rows.append(
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
    best = None
    adapters = [r for r in sys_rows if r["kind"] == "adapter"]
    if adapters:
        cands = [{"name": r["name"], **r["metrics"], "checkpoint": r["checkpoint"]} for r in adapters]
        chosen, reason = pick.choose(cands, min_sim)
        best = {
            "name": chosen["name"],
            "checkpoint": chosen["checkpoint"],
            "sha256": sha256_file(chosen["checkpoint"]),
            "rule": pick.rule_text(min_sim),
            "reason": reason,
            "metrics": {k: chosen.get(k) for k in ("cer", "similarity", "val_loss")},
            "candidates": [
                {k: c.get(k) for k in ("name", "checkpoint", "cer", "similarity", "val_loss")} for c in cands
            ],
        }
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
        "systems": sys_rows,
        "best_checkpoint": best,
        "samples": [
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
        ],
    }
