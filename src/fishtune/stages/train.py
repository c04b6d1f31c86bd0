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
- Several GPUs (``train.devices``, ``train.num_nodes``, ``train.strategy``; torchrun, srun or Lightning's own
  launcher): DDP, each rank on its own slice of every global batch (effective batch = ``batch_size`` x world
  size x ``accumulate``), validation split across ranks and all-reduced; rank zero alone writes
  (docs/multi-gpu.md).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fishtune import adapters, devices, distributed, lora
from fishtune.errors import StageFailed, UsageError
from fishtune.evaluation.loss import heldout_batches
from fishtune.generation import adapter_for
from fishtune.layout import RunLayout
from fishtune.modeling.llm import load_llm
from fishtune.results import StageResult
from fishtune.runstate import RunState, sha256_json, write_json_atomic
from fishtune.training import checkpoints, compiler, guard, memory
from fishtune.training import forward as fw
from fishtune.training.precision import trainer_args

log = logging.getLogger("fishtune.train")


def choose_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-true"
    return "32-true"


def adapter_settings(cfg: DictConfig) -> tuple[lora.LoraSettings, adapters.Adapter | None]:
    """The LoRA settings of this run: the config's, or (``train.init_lora``) the earlier adapter's r/alpha/targets,
    checked against the base it was trained on."""
    settings = lora.LoraSettings.from_config(cfg)
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


def _already_finished(cfg: DictConfig, layout: RunLayout, newest: Path | None) -> dict | None:
    """The previous summary when the newest checkpoint is the end of a finished run with the same max_steps; a
    finished run trained with other settings is an error that says what changed and how to start a new run."""
    path, max_steps, train_dir = layout.train_summary, int(cfg.train.max_steps), layout.train
    if newest is None or not path.is_file() or not layout.lora.is_file():
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


def load_data(cfg: DictConfig, layout: RunLayout, model, pin_memory: bool):
    """The packed training groups and the held-out set as a :class:`~fishtune.training.data.PackedData`."""
    from fishtune.training.data import PackedData
    from fishtune.training.samples import Collate, PackedTrainStream, ValSet, load_groups

    t, tok, nc = cfg.train, model.tokenizer, model.config.num_codebooks
    groups = load_groups(layout.shards("train"), nc)
    val_set = ValSet(load_groups(layout.shards("val"), nc), tok, nc, int(t.max_length))
    guard.check_val_set(val_set, int(t.max_length))
    collate = Collate(tok.get_token_id("<|end_of_text|>"))

    def make_stream(start_batch: int, rank: int = 0, world: int = 1) -> PackedTrainStream:
        return PackedTrainStream(groups, tok, nc, int(t.max_length), int(t.batch_size), collate, seed=int(t.seed),
                                 start_batch=start_batch, packing=str(t.packing), rank=rank, world=world)  # fmt: skip

    return PackedData(make_stream, val_set, collate, int(t.val_batch_size), int(t.accumulate), int(t.num_workers),
                      pin_memory, groups, val_items=int(t.val_batches) * int(t.val_batch_size))  # fmt: skip


def build_module(cfg: DictConfig, model, data, record: dict):
    from fishtune.training.module import LoraModule

    t = cfg.train
    model.train()
    return LoraModule(
        model,
        optimizer_settings(cfg),
        gradient_checkpointing=t.gradient_checkpointing,
        ce_chunk=int(t.ce_chunk),
        memory_fraction=float(t.memory_fraction),
        memory_limit_gb=float(t.memory_limit_gb) if t.memory_limit_gb else None,
        probe_batch=lambda: memory.probe_batch(model, data.make_stream(0)),
        adapter_record=record,
    )


def optimizer_settings(cfg: DictConfig) -> dict:
    t = cfg.train
    return {
        "lr": float(t.lr),
        "betas": list(t.betas),
        "eps": float(t.eps),
        "weight_decay": float(t.weight_decay),
        "warmup_steps": int(t.warmup_steps),
        "max_steps": int(t.max_steps),
        "scheduler": str(t.scheduler),
        "seed": int(t.seed),
    }


def build_callbacks(cfg: DictConfig, layout: RunLayout) -> dict:
    """The training callbacks by name. Checkpointing and early stopping run on every rank (they agree across
    ranks; only rank zero writes); the journal, the progress bar and the hub sync on rank zero only."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from fishtune.training.callbacks import MetricsJournal, StepProgress
    from fishtune.training.hub_sync import HubSync

    t = cfg.train
    named = {
        "steps": ModelCheckpoint(dirpath=layout.checkpoints, filename="step_{step:09d}", auto_insert_metric_name=False,
                                 every_n_train_steps=int(t.ckpt_every), save_top_k=int(t.keep_checkpoints),
                                 monitor="step", mode="max", save_on_train_epoch_end=False),
        "best": ModelCheckpoint(dirpath=layout.train, filename="best", monitor="val/loss", mode="min", save_top_k=1,
                                auto_insert_metric_name=False, enable_version_counter=False),
    }  # fmt: skip
    if int(t.early_stopping.patience) > 0:
        named["early_stopping"] = EarlyStopping(
            monitor="val/loss",
            mode="min",
            patience=int(t.early_stopping.patience),
            min_delta=float(t.early_stopping.min_delta),
            check_on_train_epoch_end=False,
            verbose=False,
        )
    if distributed.is_rank_zero():
        named["journal"] = MetricsJournal(layout.metrics, int(t.log_every), int(t.max_steps))
        named["progress"] = StepProgress(int(t.max_steps))  # a tqdm bar with ETA on a terminal; status.json
        sync = HubSync.from_config(cfg, layout.checkpoints, layout.root)  # hub.sync.repo_id: push checkpoints
        if sync is not None:
            named["hub_sync"] = sync
    return named


def build_trainer(cfg: DictConfig, layout: RunLayout, place: devices.Placement, precision: str, callbacks: dict):
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.strategies import DDPStrategy

    t = cfg.train
    strategy = str(t.strategy)
    if strategy == "ddp" or (strategy == "auto" and place.world_size > 1):
        # buffers (rotary tables) are constants: no per-forward broadcast, so ranks may run unequal validations
        strategy = DDPStrategy(broadcast_buffers=False)
    prec = trainer_args(precision)  # bf16-true: a bf16 base under fp32 adapters
    return L.Trainer(
        accelerator=place.accelerator,
        devices=place.devices,
        num_nodes=place.num_nodes,
        strategy=strategy,
        precision=prec.get("precision"),
        max_steps=int(t.max_steps),
        val_check_interval=int(t.val_every),
        check_val_every_n_epoch=None,
        limit_val_batches=1.0,  # train.val_batches cuts the held-out set before the ranks share it (PackedData)
        num_sanity_val_steps=0,
        gradient_clip_val=float(t.grad_clip) or None,
        accumulate_grad_batches=int(t.accumulate),
        callbacks=list(callbacks.values()),
        logger=TensorBoardLogger(str(layout.train), name=layout.tensorboard.name, version=""),
        plugins=[checkpoints.AtomicCheckpointIO(), *prec["plugins"]],
        default_root_dir=str(layout.train),
        log_every_n_steps=int(t.log_every),
        enable_progress_bar=False,  # StepProgress shows steps with an ETA instead
        enable_model_summary=False,
        use_distributed_sampler=False,  # PackedData shards by rank itself
        deterministic=False,
    )


def baseline(cfg, layout: RunLayout, model, data, place: devices.Placement, precision: str, resumed: bool) -> None:
    """Rank zero measures the base model's held-out loss once per run (the untrained-base guard)."""
    if distributed.is_rank_zero() and (not resumed or not layout.baseline.is_file()):
        loader = heldout_batches(data.val_set, model, data.val_batch_size)
        g, m = cfg.train.guard, cfg.model
        info = guard.base_loss(model, loader, place.device, precision, int(g.batches), float(g.max_loss_ratio),
                               bool(g.enabled), bool(m.allow_untrained), f"{m.path} ({m.name})")  # fmt: skip
        write_json_atomic(layout.baseline, info)


def save_end_state(trainer, layout: RunLayout) -> None:
    """Keep the exact end state as a checkpoint (e.g. stopped early between two periodic ones); every rank takes
    part (Lightning saves on rank zero), so they decide together, on rank zero's view of the folder."""
    last = layout.step_checkpoint(trainer.global_step)
    if trainer.strategy.broadcast(not last.is_file(), src=0):
        trainer.save_checkpoint(str(last))


def finish(cfg, layout: RunLayout, trainer, module, best, place, precision, resume_from, record, started) -> dict:
    """Rank zero: ``lora.pth``, ``summary.json`` and the run state."""
    t = cfg.train
    opt = optimizer_settings(cfg)
    final = {k: v.float() for k, v in lora.lora_state_dict(module.model).items()}
    adapters.save(layout.lora, final, record | {"step": trainer.global_step, "training": opt})
    score = best.best_model_score
    summary = {
        "steps": trainer.global_step,
        "max_steps": int(t.max_steps),
        "stopped_early": trainer.global_step < int(t.max_steps),
        "best_val_loss": float(score) if score is not None else None,
        "best_checkpoint": best.best_model_path,
        "baseline": json.loads(layout.baseline.read_text()),
        "precision": precision,
        "device": str(place.device),
        "world_size": place.world_size,
        "effective_batch": int(t.batch_size) * place.world_size * int(t.accumulate),
        "resumed_from": str(resume_from) if resume_from else None,
        "gradient_checkpointing": module.memory_plan,
        "packing": str(t.packing),
        "settings": result_settings(cfg),  # a rerun with other settings is refused, naming what changed
    }
    write_json_atomic(layout.train_summary, summary)
    RunState(layout.root).record(
        "train",
        fingerprint=sha256_json(OmegaConf.to_container(cfg.train)),
        started=started,
        steps=trainer.global_step,
        best_val_loss=summary["best_val_loss"],
    )
    return summary


def result_of(summary: dict, skipped: bool = False) -> StageResult:
    base, best = summary["baseline"]["base_val_loss"], summary["best_val_loss"]
    loss = f", val loss {base:.3f} -> {best:.3f}" if best is not None else ""
    early = ", stopped early" if summary["stopped_early"] else ""
    return StageResult(f"train/lora.pth ({summary['steps']} steps{loss}{early})", skipped=skipped, data=summary)


def log_plan(place: devices.Placement, precision: str, data, cfg: DictConfig) -> None:
    t = cfg.train
    log.info(
        "training on %d x %s (%s): %d train utterances in %d groups, %d held-out; batch %d x %d tokens per device, "
        "effective batch %d (x %d devices x %d accumulation), %d steps",
        place.world_size,
        place.device.type,
        precision,
        sum(map(len, data.groups)),
        len(data.groups),
        len(data.val_set),
        int(t.batch_size),
        int(t.max_length),
        int(t.batch_size) * place.world_size * int(t.accumulate),
        place.world_size,
        int(t.accumulate),
        int(t.max_steps),
    )


def run(cfg: DictConfig) -> StageResult:
    """Set up LoRA on the verified base, load the packed data, resume from the newest intact checkpoint (or
    return the finished run), measure the base's held-out loss, train with Lightning on every configured device,
    then (rank zero) keep the end state and write ``lora.pth`` and the summary."""
    from fishtune import logs

    logs.quiet_lightning()
    started = time.time()
    t, layout, zero = cfg.train, RunLayout.of(cfg), distributed.is_rank_zero()
    if not zero:  # rank zero tells the story; the others speak up for warnings and errors only
        logging.getLogger("fishtune").setLevel(logging.WARNING)
    place = devices.placement(str(t.device), t.devices, t.num_nodes)
    precision = choose_precision(str(t.precision), place.device)
    layout.checkpoints.mkdir(parents=True, exist_ok=True)
    import lightning as L

    L.seed_everything(int(t.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    settings, init = adapter_settings(cfg)
    model = build_model(cfg, int(t.max_length), settings, init)
    record = adapters.record(settings, adapters.base_identity(cfg.model.path, str(cfg.model.name),
                             cfg.model.repo_id, cfg.paths.cache), license=cfg.model.license)  # fmt: skip
    fw.use_sdpa_everywhere(model)
    data = load_data(cfg, layout, model, pin_memory=place.accelerator == "gpu")
    resume_from = checkpoints.newest_intact(layout.checkpoints, set_aside=zero) if t.resume else None
    finished = _already_finished(cfg, layout, resume_from)
    if finished is not None:
        why = "stopped early" if finished["stopped_early"] else "max_steps reached"
        log.info("train: already finished at step %d (%s); nothing to do (raise train.max_steps to train on)",
                 finished["steps"], why)  # fmt: skip
        return result_of(finished, skipped=True)
    baseline(cfg, layout, model, data, place, precision, resumed=resume_from is not None)
    backend = compiler.backend_of(t.compile)
    if backend is not None:  # every rank checks for the compiler of the device it will train on
        fw.compile_layers(model, backend, device=place.device.type)
        log.info("torch.compile (%s): the first steps include compilation", backend)
    module = build_module(cfg, model, data, record)
    callbacks = build_callbacks(cfg, layout)
    trainer = build_trainer(cfg, layout, place, precision, callbacks)
    log_plan(place, precision, data, cfg)
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    save_end_state(trainer, layout)
    if not trainer.is_global_zero:
        return StageResult(f"rank {trainer.global_rank}: trained {trainer.global_step} steps")
    summary = finish(cfg, layout, trainer, module, callbacks["best"], place, precision, resume_from, record, started)
    log.info("train: %d steps%s, best val loss %s (base %.4f)", summary["steps"],
             " (stopped early: val loss stopped improving)" if summary["stopped_early"] else "",
             f"{summary['best_val_loss']:.4f}" if summary["best_val_loss"] is not None else "n/a",
             summary["baseline"]["base_val_loss"])  # fmt: skip
    return result_of(summary)
