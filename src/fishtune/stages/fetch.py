"""Stage ``fetch``: base weights and the dataset, from the Hugging Face Hub or a local archive.

A no-op when there is nothing to fetch (weights present, no dataset source configured), so ``STAGE=all``
works offline.

Weights (``fetch.model=auto|always|never``): with ``auto``, when ``model.path`` lacks a weight file and
``model.repo_id`` is set, ``model.repo_id@model.revision`` is downloaded into ``model.path`` by
:func:`fishtune.weights.install`, the installer the image build runs too (resumable, content-checked,
``SHA256SUMS`` + ``WEIGHTS_SOURCE``).

Dataset (``fetch.dataset.*``), read by ``prepare`` from ``fetch.dataset.dest`` (default ``<run>/raw``):
- ``path``: a local folder (used in place) or archive (.tar.gz/.tgz/.tar/.zip, extracted safely);
- ``repo_id`` (+ ``revision``): a Hub dataset repo in the fish, LJSpeech or CSS10 layout, or with
  ``archive``: one archive file in that repo, downloaded and extracted safely.
Archives with absolute paths, ``..`` or links leaving the folder are refused (:mod:`fishtune.archives`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from fishtune import archives, formats, hub, redact, weights
from fishtune.datasets import MARKER, dataset_source
from fishtune.errors import InputError
from fishtune.layout import RunLayout
from fishtune.modeling import files, untrusted
from fishtune.results import StageResult
from fishtune.runstate import (
    RunState,
    check_replaceable,
    clean_leftovers,
    sha256_file,
    sha256_json,
    write_json_atomic,
)

log = logging.getLogger("fishtune.fetch")


def _marker(dest: Path) -> dict:
    try:
        return json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _fetch_model(cfg: DictConfig, token: str | None, cache_dir: Path, endpoint: str | None) -> dict:
    mode = str(cfg.fetch.model)
    dest = Path(cfg.model.path)
    repo, revision = cfg.model.repo_id, cfg.model.revision
    missing = files.missing_files(dest) if dest.is_dir() else list(files.REQUIRED)
    pins = files.pinned_files(cfg.model)
    if mode == "never" or (mode == "auto" and not missing):
        problems = files.pin_problems(dest, pins, cfg.paths.cache) if mode == "auto" else []
        if problems:
            raise InputError(f"{problems[0]} (model.files pins the released {cfg.model.name})", hint=files.PIN_HINT)
        reason = "fetch.model=never" if mode == "never" else f"base weights present in {dest}"
        return {"skipped": True, "reason": reason} | ({"verified": sorted(pins)} if pins and mode == "auto" else {})
    if not repo:
        log.warning("model folder %s lacks %s and model.repo_id is not set: nothing to download", dest, missing)
        return {"skipped": True, "reason": "no model.repo_id"}
    log.info("downloading base weights %s@%s into %s (missing: %s)", repo, revision, dest, ", ".join(missing))
    clean_leftovers(dest)
    out = weights.install(
        str(repo),
        str(revision) if revision else None,
        dest,
        token,
        cache_dir=cache_dir,
        endpoint=endpoint,
        pins={name: pin for name, pin in pins.items() if pin.get("sha256")},
        required=files.REQUIRED,
        allow_unpinned=True,  # model.revision may be a branch: warned, and the resolved commit is recorded
        check=untrusted.check_data_only,  # nothing that would run code gets installed
        say=log.info,
    )
    return {k: v for k, v in out.items() if k != "sha256"} | {"model.pth_sha256": out["sha256"].get("model.pth")}


def _fetch_dataset(cfg: DictConfig, token: str | None, cache_dir: Path, endpoint: str | None) -> dict:
    src = dataset_source(cfg)
    if src is None:
        return {"skipped": True, "reason": f"dataset is paths.data ({cfg.paths.data})"}
    dest = RunLayout.of(cfg).raw
    if src["kind"] == "hub" or not Path(src["path"]).is_dir():
        check_replaceable(dest, "fetch.dataset.dest folder")  # before anything is downloaded
    pinned = cfg.fetch.dataset.sha256
    if src["kind"] == "path":
        path = Path(src["path"])
        if path.is_dir():
            log.info("dataset: local folder %s (used in place)", path)
            return {"skipped": True, "reason": f"local folder {path}"}
        if not path.is_file():
            raise InputError(f"fetch.dataset.path {path} does not exist", hint="give a dataset folder or archive")
        return _install_archive(path, dest, src | {"sha256": sha256_file(path)}, pinned)

    repo, revision, archive = src["repo_id"], src["revision"], src["archive"]
    if archive:
        local = hub.download_file(
            repo, str(archive), revision, repo_type="dataset", cache_dir=cache_dir, token=token, endpoint=endpoint
        )
        digest = hub.verify(local, str(archive))
        commit = local.parent.name if hub.COMMIT_RE.match(local.parent.name) else None
        return _install_archive(local, dest, src | {"sha256": digest, "commit": commit}, pinned)
    snap = hub.snapshot(repo, revision, repo_type="dataset", cache_dir=cache_dir, token=token, endpoint=endpoint)
    found = {p.relative_to(snap).as_posix(): p for p in hub.snapshot_files(snap)}
    key = src | {"commit": snap.name}
    top = formats.safe_name(repo.split("/")[-1])  # the folder name doubles as the speaker name for LJSpeech/CSS10
    if _marker(dest).get("source") == key and all((dest / top / rel).is_file() for rel in found):
        log.info("dataset %s@%s already in %s", repo, snap.name[:12], dest)
        return {"skipped": True, "reason": f"{repo}@{snap.name[:12]} already in {dest}"}
    sums = {rel: hub.verify(p, rel) for rel, p in found.items()}
    clean_leftovers(dest)
    marker = {"source": key, "files": len(found), "sha256": sha256_json(sums)}
    hub.install_files(
        {f"{top}/{rel}": p for rel, p in found.items()}, dest, {MARKER: json.dumps(marker, indent=2) + "\n"}
    )
    log.info("dataset %s@%s: %d files in %s", repo, snap.name[:12], len(found), dest)
    return {"dataset": f"{repo}@{snap.name[:12]}", "files": len(found), "dest": str(dest)}


def _install_archive(archive: Path, dest: Path, source: dict, pinned: str | None) -> dict:
    if pinned and str(pinned).lower() != source["sha256"]:
        raise InputError(
            f"archive {archive} has sha256 {source['sha256']}, not the pinned fetch.dataset.sha256 {pinned}",
            hint="download it again, or update the pin if the dataset changed on purpose",
        )
    clean_leftovers(dest)
    if _marker(dest).get("source") == source:
        log.info("dataset archive %s already extracted in %s", archive.name, dest)
        return {"skipped": True, "reason": f"{archive.name} already extracted in {dest}"}
    log.info("extracting %s into %s", archive, dest)
    count = archives.extract(archive, dest)
    write_json_atomic(dest / MARKER, {"source": source, "files": count})
    return {"dataset": archive.name, "files": count, "dest": str(dest), "sha256": source["sha256"]}


def run(cfg: DictConfig) -> StageResult:
    started = time.time()
    cache_dir = Path(cfg.hub.cache_dir)
    endpoint = str(cfg.hub.endpoint).rstrip("/") if cfg.hub.endpoint else None
    src = dataset_source(cfg)
    mode = str(cfg.fetch.model)
    model_missing = not Path(cfg.model.path).is_dir() or bool(files.missing_files(cfg.model.path))
    wants_model = cfg.model.repo_id and (mode == "always" or (mode == "auto" and model_missing))
    # The token is read only when the Hub will be asked for something.
    token = hub.resolve_token() if wants_model or (src is not None and src["kind"] == "hub") else None
    model = _fetch_model(cfg, token, cache_dir, endpoint)
    data = _fetch_dataset(cfg, token, cache_dir, endpoint)
    done = []
    if not model.get("skipped"):
        done.append(f"base weights {model['repo_id']}@{model['commit'][:12]} -> {cfg.model.path}")
    if not data.get("skipped"):
        done.append(f"dataset {data['dataset']} ({data['files']} files) -> {data['dest']}")
    RunState(RunLayout.of(cfg)).record(
        "fetch", fingerprint=sha256_json([str(cfg.model.path), src]), started=started, model=model, dataset=data
    )
    data_out = {"model": model, "dataset": data, "done": done}
    if not done:
        reason = f"nothing to fetch ({model.get('reason')}; {data.get('reason')})"
        log.info("fetch: %s", reason)
        return StageResult(redact.redact(reason), skipped=True, data=data_out)
    return StageResult("; ".join(done), data=data_out)
