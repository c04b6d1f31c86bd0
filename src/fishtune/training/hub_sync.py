"""Training callback: push each new LoRA checkpoint and ``status.json`` to a Hub repo in the background.

Enabled by ``hub.sync.repo_id``. A new ``step_*.ckpt`` is hard-linked into ``train/.hub-sync/`` (so the
checkpoint rotation cannot delete it mid-upload) and handed to :class:`fishtune.hub.BackgroundSync`, which
commits ``checkpoints/<name>`` + ``status.json`` to the repo from its own thread. Only the newest checkpoint
waits in the queue; a failed upload is retried with back-off and never stops or slows training. At the end of
training the callback waits at most ``hub.sync.final_wait_seconds`` for the last upload.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import lightning as L

from fishtune import hub
from fishtune.layout import RunLayout
from fishtune.runstate import link_or_copy
from fishtune.training.checkpoints import list_steps

log = logging.getLogger("fishtune.train")


class HubSync(L.Callback):
    def __init__(self, sync: hub.BackgroundSync, ckpt_dir: Path, run_dir: Path, final_wait: float = 120.0):
        self.sync, self.ckpt_dir, self.run_dir, self.final_wait = sync, Path(ckpt_dir), Path(run_dir), final_wait
        self.status = RunLayout.at(run_dir).status
        self.staging = self.ckpt_dir.parent / ".hub-sync"
        self.last: str | None = None

    @classmethod
    def from_config(cls, cfg, ckpt_dir: Path, run_dir: Path) -> HubSync | None:
        s = cfg.hub.sync
        if not s.repo_id:
            return None
        endpoint = cfg.hub.endpoint
        uploader = hub.Uploader(
            str(s.repo_id),
            token=hub.resolve_token(),
            endpoint=str(endpoint).rstrip("/") if endpoint else None,
            private=bool(s.private),
            revision=s.revision,
        )
        sync = hub.BackgroundSync(
            uploader, retry_seconds=float(s.retry_seconds), max_retry_seconds=float(s.max_retry_seconds)
        )
        log.info("hub sync: each new checkpoint and status.json go to %s in the background", uploader.url)
        return cls(sync, ckpt_dir, run_dir, float(s.final_wait_seconds))

    def _status_bytes(self) -> bytes:
        try:
            return self.status.read_bytes()
        except OSError:
            return b"{}\n"

    def _scan(self) -> None:
        steps = list_steps(self.ckpt_dir)
        if not steps or steps[-1].name == self.last:
            return
        newest = steps[-1]
        self.last = newest.name
        self.staging.mkdir(parents=True, exist_ok=True)
        staged = self.staging / newest.name
        try:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
            link_or_copy(newest, staged)
        except OSError as err:  # e.g. rotated away already, or a full disk: skip this one, never fail training
            log.warning("hub sync: cannot stage %s (%s); skipping it", newest.name, err)
            return
        self.sync.submit(
            {f"checkpoints/{newest.name}": staged, self.status.name: self._status_bytes},
            f"fishtune: {self.run_dir.name} {newest.stem}",
            cleanup=[staged],
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._scan()

    def on_validation_end(self, trainer, pl_module):
        self._scan()

    def on_train_end(self, trainer, pl_module):
        self._scan()
        if self.sync.close(self.final_wait):
            log.info("hub sync: all %d checkpoint(s) pushed to %s", len(self.sync.uploaded), self.sync.uploader.url)
        shutil.rmtree(self.staging, ignore_errors=True)

    def on_exception(self, trainer, pl_module, exception):
        self.sync.close(0)
        shutil.rmtree(self.staging, ignore_errors=True)
