"""Stage ``train``: LoRA fine-tuning on the packed data, validated on the held-out split.

- LoRA is set up by fishtune (:mod:`fishtune.lora`) around the loaded weights; the stage verifies that every base
  weight is unchanged and trainable parameters are LoRA factors only.
- Before the first step the base model's validation loss is measured and compared with the loss of uniform
  guessing; a model that looks untrained (the upstream random-base bug) fails the stage unless
  ``model.allow_untrained`` (the tiny test model).
- Checkpoints ``train/checkpoints/step_000000100.ckpt`` hold LoRA weights + optimizer + scheduler + step, written
  atomically; rerunning resumes from the newest intact one (a corrupt newest one is set aside). The data stream is
  a function of the step, so a resumed run sees the same batches as an uninterrupted one.
- Early stopping watches the held-out validation loss; ``best.ckpt`` holds the best adapter.
- Outputs: ``train/lora.pth`` (final adapter), ``train/best.ckpt``, ``train/metrics.jsonl``, TensorBoard events
  in ``train/tensorboard``, ``train/summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fishtune import adapters, devices, lora
from fishtune.errors import StageFailed, UsageError
from fishtune.generation import adapter_for
from fishtune.modeling.llm import load_llm
from fishtune.runstate import RunState, sha256_json, write_json_atomic
from fishtune.training import checkpoints
from fishtune.training import forward as fw
from fishtune.training.precision import trainer_args

log = logging.getLogger("fishtune.train")


def check_val_set(val_set, max_length: int) -> None:
    """Held-out clips longer than a row are left out of validation, loudly; none left is an error (an empty
    validation would read 0.0000 and silently switch off early stopping and the untrained-base guard)."""
    if val_set.left_out:
        log.warning(
            "%d held-out clip(s) longer than train.max_length=%d tokens are left out of validation (e.g. %r)",
            len(val_set.left_out),
            max_length,
            val_set.left_out[0].text[:60],
        )
    if len(val_set) == 0:
        raise StageFailed(
            f"no held-out clip fits train.max_length={max_length} tokens: validation would measure nothing",
            hint="raise train.max_length, or lower prepare.max_duration and rerun prepare, extract and pack",
        )


def choose_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-true"
    return "32-true"


def adapter_settings(cfg: DictConfig) -> tuple[lora.LoraSettings, adapters.Adapter | None]:
    """The LoRA settings of this run: the config's, or (``train.init_lora``) the earlier adapter's r/alpha/targets,
    checked against the base it was trained on."""
    settings = lora.LoraSettings.from_dict(OmegaConf.to_container(cfg.lora))
    if not cfg.train.init_lora:
        return settings, None
    init = adapter_for(cfg, cfg.train.init_lora)
    built = init.settings
    if (built.r, built.alpha, built.targets) != (settings.r, settings.alpha, settings.targets):
        log.warning("train.init_lora: using its r=%d alpha=%g (not lora.r/lora.alpha)", built.r, built.alpha)
    return lora.LoraSettings(built.r, built.alpha, settings.dropout, built.targets), init


def build_model(cfg: DictConfig, max_length: int, settings: lora.LoraSettings, init: adapters.Adapter | None):
    """Load the base model, set up LoRA, prove the base weights survived, optionally load an earlier LoRA."""
    model = load_llm(cfg.model.path)
    if max_length > model.config.max_seq_len:
        raise UsageError(
            f"train.max_length={max_length} exceeds the model's max_seq_len {model.config.max_seq_len}",
            hint=f"use train.max_length<={model.config.max_seq_len}",
        )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = lora.apply_lora(model, settings)
    after = {k: v for k, v in model.state_dict().items() if "lora_" not in k}
    changed = [k for k in before if k not in after or not torch.equal(before[k], after[k])]
    if changed or set(after) != set(before):
        raise StageFailed(f"LoRA set-up changed base weights ({changed[:3]}): refusing to train a damaged model")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info(
        "LoRA r=%d alpha=%g on %d layers: %.2fM trainable (fp32) of %.1fM parameters (%.2f%%); base weights "
        "verified unchanged",
        settings.r,
        settings.alpha,
        len(wrapped),
        n_train / 1e6,
        n_all / 1e6,
        100 * n_train / n_all,
    )
    if init is not None:
        lora.load_lora_state_dict(model, init.weights, source=str(init.source))
        log.info("incremental training: LoRA initialised from %s", init.source)
    return model


@torch.no_grad()
def validation_loss(model, loader, device, max_batches: int, dtype) -> float:
    model.eval()
    total, n = 0.0, 0
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            total += float(fw.loss(model, batch).loss)
        n += 1
    return total / max(n, 1)


def guard(cfg: DictConfig, model, val_loader, device, precision: str) -> dict:
    """Measure the starting loss; fail loudly when the model looks untrained."""
    c = model.config
    uniform = math.log(c.vocab_size) + math.log(c.codebook_size)
    model.to(device)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    loss = validation_loss(model, val_loader, device, int(cfg.train.guard.batches), dtype)  # stays on the device
    ratio = loss / uniform
    info = {"base_val_loss": round(loss, 4), "uniform_loss": round(uniform, 4), "ratio": round(ratio, 3)}
    log.info("base model validation loss %.4f; uniform guessing would give %.4f (ratio %.2f)", loss, uniform, ratio)
    limit = float(cfg.train.guard.max_loss_ratio)
    if cfg.train.guard.enabled and ratio > limit:
        if cfg.model.allow_untrained:
            log.warning(
                "the base model looks untrained (ratio %.2f > %.2f); allowed for model %s", ratio, limit, cfg.model.name
            )
        else:
            raise StageFailed(
                f"the base model {cfg.model.path} looks untrained: validation loss {loss:.2f} is {ratio:.0%} of "
                f"uniform guessing ({uniform:.2f}); fine-tuning it would train adapters on a random base",
                hint="check that model.pth is the real pretrained checkpoint (doctor prints its sha256)",
            )
    return info


def probe_batch(model, stream, candidates: int = 8) -> dict:
    """The batch for the memory plan: of the first ``candidates`` batches (full rows when packing fills them), the
    one with the most audio frames, since the fast transformer's memory grows with them."""
    batches = [stream.batch(b) for b in range(candidates)]
    return max(batches, key=lambda b: int(fw.semantic_mask(model, b["labels"][:, 0]).sum()))


# The settings that decide what a finished adapter is (train.max_steps is handled on its own: raising it trains on).
RESULT_KEYS = ("lora.r", "lora.alpha", "lora.dropout", "model.path", "train.init_lora") + tuple(
    f"train.{k}"
    for k in (
        "precision", "batch_size", "max_length", "lr", "betas", "eps", "weight_decay", "warmup_steps",
        "scheduler", "grad_clip", "accumulate", "packing", "seed",
    )
)  # fmt: skip


def result_settings(cfg: DictConfig) -> dict:
    return {k: OmegaConf.to_container(v) if OmegaConf.is_config(v := OmegaConf.select(cfg, k)) else v
            for k in RESULT_KEYS}  # fmt: skip


def _changed(prev: dict, now: dict) -> list[str]:
    return [f"{k} {prev[k]!r} -> {now[k]!r}" for k in RESULT_KEYS if k in prev and str(prev[k]) != str(now[k])]


def _already_finished(cfg: DictConfig, train_dir: Path, newest: Path | None) -> dict | None:
    """The previous summary when the newest checkpoint is the end of a finished run with the same max_steps; a
    finished run trained with other settings is an error that says what changed and how to start a new run."""
    path, max_steps = train_dir / "summary.json", int(cfg.train.max_steps)
    if newest is None or not path.is_file() or not (train_dir / "lora.pth").is_file():
        return None
    prev = json.loads(path.read_text())
    ended = prev.get("stopped_early") or prev.get("steps", 0) >= max_steps
    if not (ended and checkpoints.step_of(newest) == prev.get("steps")):
        return None
    changed = _changed(prev.get("settings", {}), result_settings(cfg))
    if changed:
        raise UsageError(
            f"{train_dir} holds a run finished at step {prev.get('steps')} with other settings: {', '.join(changed)}",
            hint="start a new run for the new settings (RUN_NAME=<new name>; add train.init_lora="
            f"{train_dir} to continue from this adapter), or set them back to reuse this one",
        )
    return prev if prev.get("max_steps") == max_steps else None


def run(cfg: DictConfig) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    from fishtune import logs
    from fishtune.training.callbacks import MetricsJournal, StepProgress
    from fishtune.training.hub_sync import HubSync
    from fishtune.training.module import LoraModule
    from fishtune.training.samples import Collate, PackedTrainStream, ValSet, load_groups

    logs.quiet_lightning()
    started = time.time()
    t = cfg.train
    run_dir = Path(cfg.run_dir)
    train_dir = run_dir / "train"
    ckpt_dir = train_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = devices.pick(str(t.device))
    precision = choose_precision(str(t.precision), device)
    L.seed_everything(int(t.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")

    settings, init = adapter_settings(cfg)
    model = build_model(cfg, int(t.max_length), settings, init)
    base = adapters.base_identity(cfg.model.path, str(cfg.model.name), cfg.model.get("repo_id"), cfg.paths.cache)
    record = adapters.record(settings, base, license=cfg.model.get("license"))
    fw.use_sdpa_everywhere(model)
    tok, nc = model.tokenizer, model.config.num_codebooks
    train_groups = load_groups(run_dir / "packed" / "train", nc)
    val_groups = load_groups(run_dir / "packed" / "val", nc)
    collate = Collate(tok.get_token_id("<|end_of_text|>"))
    workers = int(t.num_workers)
    val_set = ValSet(val_groups, tok, nc, int(t.max_length))
    check_val_set(val_set, int(t.max_length))
    val_loader = DataLoader(
        val_set,
        batch_size=int(t.val_batch_size),
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
    )

    resume_from = checkpoints.newest_intact(ckpt_dir) if t.resume else None
    finished = _already_finished(cfg, train_dir, resume_from)
    if finished is not None:
        log.info(
            "train: already finished at step %d (%s); nothing to do (raise train.max_steps to train on)",
            finished["steps"],
            "stopped early" if finished["stopped_early"] else "max_steps reached",
        )
        return finished
    baseline_file = train_dir / "baseline.json"
    if resume_from is None or not baseline_file.is_file():
        baseline = guard(cfg, model, val_loader, device, precision)
        write_json_atomic(baseline_file, baseline)

    if t.compile:
        backend = "inductor" if t.compile is True else str(t.compile)
        fw.compile_layers(model, backend)
        log.info("torch.compile (%s): the first steps include compilation", backend)

    def train_stream(start_batch: int) -> PackedTrainStream:
        return PackedTrainStream(
            train_groups,
            tok,
            nc,
            int(t.max_length),
            int(t.batch_size),
            collate,
            seed=int(t.seed),
            start_batch=start_batch,
            packing=str(t.packing),
        )

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            start = self.trainer.global_step * int(t.accumulate)  # restored from the checkpoint by now
            return DataLoader(
                train_stream(start),
                batch_size=None,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=device.type == "cuda",
            )

        def val_dataloader(self):
            return val_loader

    opt = {
        "lr": float(t.lr),
        "betas": list(t.betas),
        "eps": float(t.eps),
        "weight_decay": float(t.weight_decay),
        "warmup_steps": int(t.warmup_steps),
        "max_steps": int(t.max_steps),
        "scheduler": str(t.scheduler),
        "seed": int(t.seed),
    }
    model.train()
    module = LoraModule(
        model,
        opt,
        gradient_checkpointing=t.gradient_checkpointing,
        ce_chunk=int(t.ce_chunk),
        memory_fraction=float(t.memory_fraction),
        memory_limit_gb=float(t.memory_limit_gb) if t.memory_limit_gb else None,
        probe_batch=lambda: probe_batch(model, train_stream(0)),
        adapter_record=record,
    )
    journal = MetricsJournal(train_dir / "metrics.jsonl", int(t.log_every), int(t.max_steps))
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="step_{step:09d}",
            auto_insert_metric_name=False,
            every_n_train_steps=int(t.ckpt_every),
            save_top_k=int(t.keep_checkpoints),
            monitor="step",
            mode="max",
            save_on_train_epoch_end=False,
        ),
        ModelCheckpoint(
            dirpath=train_dir,
            filename="best",
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        journal,
        StepProgress(int(t.max_steps)),  # a tqdm bar with ETA on a terminal; status.json either way
    ]
    sync = HubSync.from_config(cfg, ckpt_dir, run_dir)  # hub.sync.repo_id: push checkpoints in the background
    if sync is not None:
        callbacks.append(sync)
    if int(t.early_stopping.patience) > 0:
        callbacks.append(
            EarlyStopping(
                monitor="val/loss",
                mode="min",
                patience=int(t.early_stopping.patience),
                min_delta=float(t.early_stopping.min_delta),
                check_on_train_epoch_end=False,
                verbose=False,
            )
        )
    val_batches = int(t.val_batches) or 1.0
    prec = trainer_args(precision)  # bf16-true: a bf16 base under fp32 adapters
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision=prec.get("precision"),
        max_steps=int(t.max_steps),
        val_check_interval=int(t.val_every),
        check_val_every_n_epoch=None,
        limit_val_batches=val_batches,
        num_sanity_val_steps=0,
        gradient_clip_val=float(t.grad_clip) or None,
        accumulate_grad_batches=int(t.accumulate),
        callbacks=callbacks,
        logger=TensorBoardLogger(str(train_dir), name="tensorboard", version=""),
        plugins=[checkpoints.AtomicCheckpointIO(), *prec["plugins"]],
        default_root_dir=str(train_dir),
        log_every_n_steps=int(t.log_every),
        enable_progress_bar=False,  # StepProgress shows steps with an ETA instead
        enable_model_summary=False,
        deterministic=False,
    )
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    log.info(
        "training on %s (%s): %d train utterances in %d groups, %d held-out; batch %d x %d tokens, %d steps",
        device,
        precision,
        sum(map(len, train_groups)),
        len(train_groups),
        len(val_set),
        int(t.batch_size),
        int(t.max_length),
        int(t.max_steps),
    )
    trainer.fit(module, datamodule=Data(), ckpt_path=str(resume_from) if resume_from else None)

    last = ckpt_dir / f"step_{trainer.global_step:09d}.ckpt"
    if not last.is_file():  # e.g. stopped early between two periodic checkpoints: keep the exact end state
        trainer.save_checkpoint(str(last))
    final = {k: v.float() for k, v in lora.lora_state_dict(model).items()}
    adapters.save(train_dir / "lora.pth", final, record | {"step": trainer.global_step, "training": opt})
    stopped_early = trainer.global_step < int(t.max_steps)
    best = callbacks[1].best_model_score
    summary = {
        "steps": trainer.global_step,
        "max_steps": int(t.max_steps),
        "stopped_early": stopped_early,
        "best_val_loss": float(best) if best is not None else None,
        "best_checkpoint": callbacks[1].best_model_path,
        "baseline": json.loads(baseline_file.read_text()),
        "precision": precision,
        "device": str(device),
        "resumed_from": str(resume_from) if resume_from else None,
        "gradient_checkpointing": module.memory_plan,
        "packing": str(t.packing),
        "settings": result_settings(cfg),  # a rerun with other settings is refused, naming what changed
    }
    write_json_atomic(train_dir / "summary.json", summary)
    log.info(
        "train: %d steps%s, best val loss %s (base %.4f)",
        trainer.global_step,
        " (stopped early: val loss stopped improving)" if stopped_early else "",
        f"{summary['best_val_loss']:.4f}" if best is not None else "n/a",
        summary["baseline"]["base_val_loss"],
    )
    RunState(run_dir).record(
        "train",
        fingerprint=sha256_json(OmegaConf.to_container(cfg.train)),
        started=started,
        steps=trainer.global_step,
        best_val_loss=summary["best_val_loss"],
    )
    return summary
