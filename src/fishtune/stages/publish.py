"""Stage ``publish``: upload the merged model, the LoRA, samples, report and a model card to a Hub repo.

A no-op unless ``publish.repo_id`` is set (so ``STAGE=all`` stays offline). The repository is assembled in
``<run>/publish/`` first (hard links, replaced atomically), so what is uploaded can be inspected:

    README.md               model card: base model, data hours, steps, losses, the base model's licence (inherited)
    model.pth config.json tokenizer.tiktoken special_tokens.json codec.pth   the merged model (Fish Speech layout)
    lora/lora.pth lora/adapter.json      the merged adapter alone, its settings and base (read from the adapter file)
    samples/*.wav samples/index.jsonl    synthesized examples (when the synthesize stage ran)
    report/...                           the evaluation report (when it exists)
    training/metrics.jsonl training/summary.json training/merge.json training/summary_run.json

The upload is one commit through ``HfApi.upload_folder``; files already on the Hub with the same content are
skipped by huggingface_hub, so publishing again after an interruption uploads only what is missing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from omegaconf import DictConfig

from fishtune import adapters, hub, modelcard, redact, status
from fishtune.errors import InputError
from fishtune.layout import RunLayout
from fishtune.results import StageResult
from fishtune.runstate import RunState, atomic_dir, clean_leftovers, link_or_copy, sha256_json

log = logging.getLogger("fishtune.publish")


def _base_commit(cfg: DictConfig) -> str | None:
    """The base weights' commit from ``WEIGHTS_SOURCE`` (fetch / image bake), else the configured revision."""
    source = Path(cfg.model.path) / "WEIGHTS_SOURCE"
    found = (
        re.search(r"@([0-9a-f]{40})", source.read_text(encoding="utf-8", errors="replace"))
        if source.is_file()
        else None
    )
    return found.group(1) if found else cfg.model.revision


def _merged_adapter(run: RunLayout) -> adapters.Adapter:
    """The adapter the merged model was made from (``model/state.json``), else ``train/lora.pth``."""
    merged_from = _json(run.merge_record).get("checkpoint")
    path = Path(merged_from) if merged_from and Path(merged_from).exists() else run.lora
    if not path.exists():
        raise InputError(f"no trained adapter {path}", hint="run the train stage first (STAGE=train)")
    return adapters.read(path)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def assemble(cfg: DictConfig, repo_id: str) -> tuple[Path, list[str]]:
    """Build ``<run>/publish/`` (atomically); returns it and the list of files in it."""
    run = RunLayout.of(cfg)
    model_dir = run.model
    if not run.merged_model.is_file():
        raise InputError(f"no merged model in {model_dir}", hint="run the merge stage first (STAGE=merge)")
    adapter = _merged_adapter(run)
    out = run.publish
    with atomic_dir(out) as tmp:
        for p in sorted(model_dir.iterdir()):
            if p.is_file() and p.name not in ("README.md", run.merge_record.name) and not p.name.startswith("."):
                link_or_copy(p, tmp / p.name)
        if run.merge_record.is_file():
            link_or_copy(run.merge_record, tmp / "training" / "merge.json")
        record = adapters.record(adapter.settings, adapter.base, adapter.step, license=cfg.model.license)
        adapters.save(tmp / "lora" / "lora.pth", adapter.weights, record)
        (tmp / "lora" / "adapter.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        samples = run.samples
        if samples.is_dir():
            for p in sorted(samples.iterdir()):
                if p.is_file() and (p.suffix == ".wav" or p.name == run.samples_index.name):
                    link_or_copy(p, tmp / "samples" / p.name)
        report = run.report
        if report.is_dir():
            for p in sorted(report.rglob("*")):
                if p.is_file() and not p.name.startswith("."):
                    link_or_copy(p, tmp / "report" / p.relative_to(report))
        for src, name in (
            (run.metrics, "metrics.jsonl"),
            (run.train_summary, "summary.json"),
            (run.summary, "summary_run.json"),
        ):
            if src.is_file():
                link_or_copy(src, tmp / "training" / name)
        listed = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        run_cost = status.current().get("cost", {}).get("run_usd")
        card = modelcard.render_hub_card(
            run,
            repo_id=repo_id,
            base_repo=cfg.model.repo_id,
            base_revision=_base_commit(cfg),
            base_name=str(cfg.model.name),
            language=cfg.recipe.language,
            lora_settings=adapter.settings.to_dict(),
            files=["README.md", *listed],
            license_id=cfg.model.license,
            cost=status.money(run_cost) + " (GPU_HOURLY_USD x hours)" if isinstance(run_cost, float) else None,
        )
        (tmp / "README.md").write_text(redact.redact(card), encoding="utf-8")
        for p in tmp.rglob("*.json*"):  # status/summary copies: belt and braces against a leaked token
            text = p.read_text(encoding="utf-8", errors="replace")
            if redact.redact(text) != text:
                p.unlink()
                p.write_text(redact.redact(text), encoding="utf-8")
    return out, ["README.md", *listed]


def _warn_public(cfg: DictConfig) -> None:
    lic = cfg.model.license
    log.warning(
        "publish.private=false: the repo will be public. The base model %s is licensed %s; the fine-tune inherits "
        "it (see the model card): publish it only under those terms",
        cfg.model.repo_id or cfg.model.name,
        modelcard.LICENCES.get(str(lic).lower(), (lic or "under its own terms",))[0],
    )


def run(cfg: DictConfig) -> StageResult:
    started = time.time()
    p = cfg.publish
    repo_id = p.repo_id
    if not repo_id:
        log.info("publish: no publish.repo_id set, nothing uploaded (set publish.repo_id=<user>/<name> to publish)")
        return StageResult("no publish.repo_id", skipped=True)
    run = RunLayout.of(cfg)
    if not bool(p.private):
        _warn_public(cfg)
    clean_leftovers(run.publish)
    folder, listed = assemble(cfg, str(repo_id))
    size = sum((folder / f).stat().st_size for f in listed)
    log.info("publish: %d files (%.1f MiB) assembled in %s", len(listed), size / 2**20, folder)
    endpoint = cfg.hub.endpoint
    uploader = hub.Uploader(
        str(repo_id),
        token=hub.resolve_token(),
        endpoint=str(endpoint).rstrip("/") if endpoint else None,
        private=bool(p.private),
        revision=p.revision,
    )
    message = p.commit_message or f"fishtune: {run.root.name} ({cfg.model.name} + LoRA, {cfg.recipe.name})"
    attempts = int(p.attempts)  # >= 1: fishtune.schema
    for attempt in range(1, attempts + 1):
        try:
            info = uploader.upload_folder(folder, str(message))
            break
        except hub.HubError as err:
            if attempt == attempts or not err.transient:
                raise
            wait = float(p.retry_seconds) * attempt
            log.warning("publish: upload attempt %d failed (%s); retrying in %.0f s", attempt, err.one_line(), wait)
            time.sleep(wait)
    commit = getattr(info, "oid", None) or ""
    url = uploader.url
    log.info("publish: %s at commit %s (%d files)", url, str(commit)[:12], len(listed))
    result = {"repo_id": str(repo_id), "url": url, "commit": commit, "files": len(listed), "folder": str(folder)}
    RunState(run).record("publish", fingerprint=sha256_json([str(repo_id), listed]), started=started, **result)
    return StageResult(f"{url} ({len(listed)} files)", data=result)
