"""The Hugging Face Hub: downloads (base weights, datasets) and uploads (checkpoints during training, publish).

Everything goes through huggingface_hub's own client (``snapshot_download``, ``hf_hub_download``,
``HfApi.create_repo`` / ``upload_folder`` / ``create_commit``), so its cache layout, resumable downloads
(``*.incomplete`` files continue with an HTTP Range request), offline mode (``HF_HUB_OFFLINE=1`` with a filled
cache) and ``HF_ENDPOINT`` all work as documented by huggingface_hub.

On top of it fishtune adds:
- the token from ``HF_TOKEN`` or a mounted secret file (:mod:`fishtune.redact`), never logged;
- one-line errors for gated repos, missing repos or revisions, rejected tokens and an unreachable Hub;
- a content check of every downloaded file: large (LFS) files against the sha256 the Hub names them by,
  small files against their git blob hash, and optionally against pinned sha256 values; a mismatching file
  is removed from the cache so the next run downloads it again;
- (base weights are not installed here but by :mod:`fishtune.weights`, the stdlib-only installer the fetch
  stage and the image build share);
- :class:`BackgroundSync`, a thread that pushes files to a Hub repo and retries failures without ever
  raising into the caller (used during training).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fishtune import redact
from fishtune.errors import FishtuneError, InputError
from fishtune.runstate import atomic_dir, link_or_copy, sha256_file
from fishtune.weights import git_blob_sha1

log = logging.getLogger("fishtune.hub")

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
TOKENS_URL = "https://huggingface.co/settings/tokens"


class HubError(FishtuneError):
    """The Hub refused or could not serve a request (gated, missing, bad token, unreachable).

    ``transient``: the network or the server failed, not the request; trying again may work.
    """

    def __init__(self, message: str, *, hint: str | None = None, transient: bool = False):
        super().__init__(message, hint=hint)
        self.transient = transient


def _quiet() -> None:
    for name in ("huggingface_hub", "huggingface_hub.file_download", "huggingface_hub._commit_api"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import sys

    if not sys.stdout.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def resolve_token(explicit: str | None = None) -> str | None:
    """The token to use: ``explicit``, else ``HF_TOKEN``, else the secret file; logs where it came from."""
    if explicit:
        redact.remember(explicit)
        return explicit
    value, where = redact.read_token()
    log.info("Hugging Face token: %s", where)
    return value


def repo_url(repo_id: str, repo_type: str = "model", endpoint: str | None = None) -> str:
    from huggingface_hub import constants

    base = (endpoint or constants.ENDPOINT).rstrip("/")
    return f"{base}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"


def explain(
    err: BaseException, *, repo_id: str, revision: str | None, repo_type: str = "model", what: str = ""
) -> Exception:
    """Turn a huggingface_hub / network error into a one-line :class:`HubError` (token-free)."""
    import requests
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kind = "dataset" if repo_type == "dataset" else ("Space" if repo_type == "space" else "model")
    where = f"{kind} repository {repo_id}" + (f"@{revision}" if revision else "")
    first = redact.redact(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    status = getattr(getattr(err, "response", None), "status_code", None)
    server = getattr(err, "server_message", None) or ""
    if isinstance(err, GatedRepoError):
        return HubError(
            f"{where} is gated: your account has not been granted access",
            hint=f"accept the conditions at {repo_url(repo_id, repo_type)} with the account whose token you set "
            "(HF_TOKEN or the file in HF_TOKEN_FILE), then rerun",
        )
    bad_token = HubError(
        f"the Hub rejected the token for {where} (401: invalid or expired credentials)",
        hint=f"set HF_TOKEN (or HF_TOKEN_FILE) to a valid token from {TOKENS_URL}",
    )
    if status == 401 and "invalid credentials" in f"{server} {err}".lower():
        return bad_token
    if isinstance(err, RepositoryNotFoundError):
        return HubError(
            f"{where} not found, or it is private and the token has no access to it",
            hint=f"check the name (is it a {kind} repo?) and set HF_TOKEN / HF_TOKEN_FILE for private repos",
        )
    if isinstance(err, RevisionNotFoundError):
        return HubError(
            f"revision {revision!r} does not exist in {kind} repository {repo_id}",
            hint="use a branch, tag or full commit hash that exists (see the repo's commit history)",
        )
    if isinstance(err, LocalEntryNotFoundError | OfflineModeIsEnabled | requests.ConnectionError | requests.Timeout):
        from huggingface_hub import constants

        offline = " (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        return HubError(
            f"cannot download {where}{(' ' + what) if what else ''}: the Hub is not reachable{offline} and the "
            "files are not in the local cache",
            hint="check the network or HF_ENDPOINT, or fill the cache (HF_HUB_CACHE) on a connected machine and "
            "run with HF_HUB_OFFLINE=1",
            transient=True,
        )
    if isinstance(err, EntryNotFoundError):
        return HubError(
            f"{what or 'the file'} not found in {where}",
            hint="check the file name (fetch.dataset.archive) against the repo's file list",
        )
    if status == 403:
        return HubError(
            f"the Hub refused access to {where} (403 forbidden: {server or first})",
            hint="use a token with the needed permission (write access for uploads)",
        )
    if status == 401:
        return bad_token
    if isinstance(err, HfHubHTTPError):
        return HubError(
            f"Hub request for {where} failed: {first}",
            hint="retry later; a rerun resumes downloads and skips uploaded files",
            transient=True,
        )
    return HubError(
        f"download of {where} failed: {type(err).__name__}: {first}", hint="rerun to resume", transient=True
    )


# -- downloads ---------------------------------------------------------------------------------------------------
def snapshot_files(snapshot: Path) -> list[Path]:
    return sorted(p for p in snapshot.rglob("*") if p.is_file() and ".cache" not in p.relative_to(snapshot).parts[:1])


def verify(path: Path, rel: str, expected: str | None = None) -> str:
    """sha256 of a downloaded file, checked against the Hub's name for it (and ``expected``).

    In the Hub cache a file is a link to ``blobs/<etag>``: a large (LFS) file's etag is its sha256, a small
    file's is its git blob sha1. A mismatch removes the blob and the link (the next run downloads it again).
    """
    real = Path(os.path.realpath(path))
    digest = sha256_file(real, 1 << 22)
    blob = real.name
    bad = None
    if SHA256_RE.match(blob) and blob != digest:
        bad = f"its sha256 {digest[:16]}... differs from the Hub's {blob[:16]}..."
    elif re.fullmatch(r"[0-9a-f]{40}", blob) and path.is_symlink() and git_blob_sha1(real) != blob:
        bad = f"its git hash differs from the Hub's {blob[:16]}..."
    elif expected and expected.lower() != digest:
        bad = f"its sha256 {digest[:16]}... differs from the pinned {expected[:16]}..."
    if bad:
        if path.is_symlink():
            with contextlib.suppress(OSError):
                real.unlink()
            with contextlib.suppress(OSError):
                path.unlink()
        raise HubError(
            f"downloaded file {rel} is corrupt: {bad}; removed it from the cache",
            hint="rerun the fetch stage to download it again (check model.files if you changed the pins)",
        )
    return digest


def _call(fn: Callable[[], Any], **ctx: Any) -> Any:
    _quiet()
    try:
        return fn()
    except FishtuneError:
        raise
    except Exception as err:
        from huggingface_hub.errors import HFValidationError

        if isinstance(err, HFValidationError):
            raise InputError(f"invalid Hub repo id or revision: {err}", hint="use <owner>/<name>") from err
        if isinstance(err, OSError | ValueError) and not _is_hub_error(err):
            raise
        raise explain(err, **ctx) from err


def _is_hub_error(err: BaseException) -> bool:
    import requests

    return isinstance(err, requests.RequestException) or type(err).__module__.startswith("huggingface_hub")


def snapshot(
    repo_id: str,
    revision: str | None,
    *,
    repo_type: str = "model",
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    allow_patterns: list[str] | None = None,
) -> Path:
    """``snapshot_download`` into the Hub cache; returns ``.../snapshots/<commit>``."""
    from huggingface_hub import snapshot_download

    return Path(
        _call(
            lambda: snapshot_download(
                repo_id=repo_id,
                revision=revision,
                repo_type=repo_type,
                cache_dir=str(cache_dir) if cache_dir else None,
                token=token,
                endpoint=endpoint,
                allow_patterns=allow_patterns,
            ),
            repo_id=repo_id,
            revision=revision,
            repo_type=repo_type,
        )
    )


def download_file(
    repo_id: str,
    filename: str,
    revision: str | None,
    *,
    repo_type: str = "model",
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """``hf_hub_download`` of one file into the Hub cache (resumes a partial download)."""
    from huggingface_hub import hf_hub_download

    return Path(
        _call(
            lambda: hf_hub_download(
                repo_id=repo_id,
                filename=filename,
                revision=revision,
                repo_type=repo_type,
                cache_dir=str(cache_dir) if cache_dir else None,
                token=token,
                endpoint=endpoint,
            ),
            repo_id=repo_id,
            revision=revision,
            repo_type=repo_type,
            what=filename,
        )
    )


def install_files(files: dict[str, Path], dest: Path, extra: dict[str, str] | None = None) -> None:
    """Put ``{relative path: source}`` into ``dest`` as real files (hard link or copy), replacing it atomically."""
    with atomic_dir(dest, tag="fetch", what="download folder") as tmp:
        for rel, src in files.items():
            link_or_copy(src, tmp / rel)
        for rel, text in (extra or {}).items():
            (tmp / rel).write_text(text, encoding="utf-8")


# -- uploads -----------------------------------------------------------------------------------------------------
class Uploader:
    """Create a Hub repo (once) and commit files or a folder to it, with huggingface_hub's ``HfApi``."""

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        repo_type: str = "model",
        private: bool = True,
        revision: str | None = None,
    ):
        from huggingface_hub import HfApi

        _quiet()
        self.repo_id, self.repo_type, self.private, self.revision = repo_id, repo_type, private, revision
        self.endpoint = endpoint
        self.api = HfApi(endpoint=endpoint, token=token)
        self._created = False

    def _ctx(self) -> dict:
        return {"repo_id": self.repo_id, "revision": self.revision, "repo_type": self.repo_type}

    def ensure_repo(self) -> None:
        if not self._created:
            _call(
                lambda: self.api.create_repo(
                    self.repo_id, repo_type=self.repo_type, private=self.private, exist_ok=True
                ),
                **self._ctx(),
            )
            self._created = True

    def commit(self, files: dict[str, Path | bytes], message: str) -> str:
        """One commit with ``{path in repo: file or bytes}``; returns the commit id."""
        from huggingface_hub import CommitOperationAdd

        self.ensure_repo()
        ops = [
            CommitOperationAdd(path_in_repo=k, path_or_fileobj=v if isinstance(v, bytes) else str(v))
            for k, v in files.items()
        ]
        info = _call(
            lambda: self.api.create_commit(
                self.repo_id, operations=ops, commit_message=message, repo_type=self.repo_type, revision=self.revision
            ),
            **self._ctx(),
        )
        return info.oid

    def upload_folder(self, folder: Path, message: str) -> Any:
        self.ensure_repo()
        return _call(
            lambda: self.api.upload_folder(
                repo_id=self.repo_id,
                folder_path=str(folder),
                repo_type=self.repo_type,
                revision=self.revision,
                commit_message=message,
                ignore_patterns=[".fishtune-output"],  # fishtune's own "made by fishtune" marker stays local
            ),
            **self._ctx(),
        )

    @property
    def url(self) -> str:
        return repo_url(self.repo_id, self.repo_type, self.endpoint)


FileSource = Path | bytes | Callable[[], bytes]


class BackgroundSync:
    """Push files to a Hub repo from a background thread; never raises into the caller.

    ``submit(files, message)`` replaces any job still waiting (only the newest state matters: the newest
    checkpoint and status). A failed upload is retried with exponential back-off (``retry_seconds`` doubling
    up to ``max_retry_seconds``) until it succeeds or a newer job replaces it. ``close(timeout)`` waits at most
    ``timeout`` seconds for the last job, then gives up with a warning.
    """

    def __init__(
        self,
        uploader: Uploader,
        *,
        retry_seconds: float = 10.0,
        max_retry_seconds: float = 300.0,
    ):
        self.uploader = uploader
        self.retry_seconds, self.max_retry_seconds = max(0.01, retry_seconds), max(retry_seconds, max_retry_seconds)
        self._cv = threading.Condition()
        self._pending: dict | None = None
        self._busy = False
        self._stop = False
        self.uploaded: list[str] = []
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="fishtune-hub-sync", daemon=True)
        self._thread.start()

    def submit(self, files: dict[str, FileSource], message: str, cleanup: list[Path] | None = None) -> None:
        with self._cv:
            if self._pending is not None:
                self._discard(self._pending)
            self._pending = {"files": files, "message": message, "cleanup": cleanup or [], "attempt": 0}
            self._cv.notify_all()

    @staticmethod
    def _discard(job: dict) -> None:
        for p in job.get("cleanup", []):
            with contextlib.suppress(OSError):
                Path(p).unlink()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._stop:
                    self._cv.wait()
                if self._pending is None:
                    return
                job, self._pending, self._busy = self._pending, None, True
            ok = self._attempt(job)
            with self._cv:
                self._busy = False
                if ok:
                    self._discard(job)
                elif self._pending is None and not self._stop:
                    self._pending = job  # retry, unless something newer arrived meanwhile
                    delay = min(self.max_retry_seconds, self.retry_seconds * 2 ** (job["attempt"] - 1))
                    self._cv.wait(timeout=delay)
                else:
                    self._discard(job)
                self._cv.notify_all()

    def _attempt(self, job: dict) -> bool:
        job["attempt"] += 1
        try:
            files = {k: (v() if callable(v) else v) for k, v in job["files"].items()}
            commit = self.uploader.commit(files, job["message"])
        except Exception as err:  # never let an upload problem reach training
            self.last_error = redact.redact(
                err.one_line() if isinstance(err, FishtuneError) else f"{type(err).__name__}: {err}"
            )
            log.warning(
                "hub sync to %s failed (attempt %d, training goes on; will retry): %s",
                self.uploader.repo_id,
                job["attempt"],
                self.last_error.splitlines()[0] if self.last_error else "",
            )
            return False
        self.uploaded.append(job["message"])
        log.info(
            "hub sync: pushed %s to %s (commit %s)", ", ".join(job["files"]), self.uploader.repo_id, str(commit)[:12]
        )
        return True

    def close(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for pending uploads; returns True when everything was pushed."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cv:
            while (self._pending is not None or self._busy) and time.monotonic() < deadline:
                self._cv.notify_all()
                self._cv.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            done = self._pending is None and not self._busy
            if self._pending is not None:
                log.warning(
                    "hub sync: gave up on %r after %.0f s (last error: %s); the files are still in the run directory",
                    self._pending["message"],
                    timeout,
                    self.last_error,
                )
                self._discard(self._pending)
                self._pending = None
            self._stop = True
            self._cv.notify_all()
        return done
