#!/usr/bin/env python3
"""Download pinned base weights from the Hugging Face Hub into a model folder (used at image build time).

    python fetch_weights.py --repo fishaudio/openaudio-s1-mini --revision <40-hex commit> \
        --dest /opt/models/openaudio-s1-mini [--token-file /run/secrets/hf_token] [--cache-dir DIR]

* The revision must be a full commit hash (a branch or tag would make the image depend on the build day);
  ``--allow-unpinned`` lifts that for experiments, and the commit it resolved to is still recorded.
* The token is read from a file (a BuildKit secret, ``--mount=type=secret,id=hf_token``): it never passes
  through an ARG, an ENV or the command line, so it stays out of the image and its history. It is not printed.
* Files go through the Hub cache (``--cache-dir``, a build cache mount in the Dockerfile), are copied as real
  files into ``--dest``, and every file's sha256 is written to ``SHA256SUMS``; a large (LFS) file whose content
  does not match the sha256 the Hub named it by is an error. ``WEIGHTS_SOURCE`` (one line, printed by the
  ``doctor`` stage) says where the weights came from.
* With ``HF_HUB_OFFLINE=1`` the files come from the cache alone (the tests use that with a local cache).

Exit codes: 0 done, 1 download or verification failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

REQUIRED = ("model.pth", "codec.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class FetchError(Exception):
    pass


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_token(path: Path | None) -> str | None:
    """The token from the secret file, or None (anonymous) when there is none."""
    if path is None or not path.is_file():
        return None
    token = path.read_text(encoding="utf-8").strip()
    return token or None


def download(repo: str, revision: str, cache_dir: Path, token: str | None) -> Path:
    """Snapshot of ``repo`` at ``revision`` in the Hub cache; returns the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo, revision=revision, cache_dir=str(cache_dir), token=token))
    except GatedRepoError as err:
        raise FetchError(
            f"{repo} is gated: accept its licence on the Hub with the account whose token you pass "
            "(--secret id=hf_token,src=FILE)"
        ) from err
    except RepositoryNotFoundError as err:
        raise FetchError(f"{repo} not found, or the token lacks access to it") from err
    except LocalEntryNotFoundError as err:
        raise FetchError(f"{repo}@{revision} is not in {cache_dir} and the Hub cannot be reached: {err}") from err
    except HfHubHTTPError as err:
        raise FetchError(f"download of {repo}@{revision} failed: {str(err).splitlines()[0]}") from err


def install(snapshot: Path, dest: Path) -> dict[str, str]:
    """Copy the snapshot's files (as real files) into ``dest``; returns {relative path: sha256}."""
    files = sorted(p for p in snapshot.rglob("*") if p.is_file() and ".cache" not in p.relative_to(snapshot).parts)
    missing = [name for name in REQUIRED if not (snapshot / name).is_file()]
    if missing:
        raise FetchError(f"the snapshot lacks {', '.join(missing)} (is this a Fish Speech model repository?)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        sums: dict[str, str] = {}
        for src in files:
            rel = src.relative_to(snapshot).as_posix()
            digest = sha256_file(src)
            # The Hub cache stores large (LFS) files as blobs named by their sha256: check the content.
            blob = Path(os.path.realpath(src)).name
            if SHA256_RE.match(blob) and blob != digest:
                raise FetchError(f"{rel}: content sha256 {digest} does not match the Hub's {blob} (corrupt download)")
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            out.chmod(0o644)
            sums[rel] = digest
        # Readable by the image's unprivileged user (mkdtemp makes 0700; the umask may be strict).
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            d.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sums


def record(dest: Path, repo: str, commit: str, sums: dict[str, str]) -> None:
    (dest / "SHA256SUMS").write_text("".join(f"{h}  {rel}\n" for rel, h in sorted(sums.items())), encoding="utf-8")
    (dest / "WEIGHTS_SOURCE").write_text(
        f"baked into the image: {repo}@{commit}, {len(sums)} files, sha256 in {dest / 'SHA256SUMS'}\n",
        encoding="utf-8",
    )
    for name in ("SHA256SUMS", "WEIGHTS_SOURCE"):
        (dest / name).chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="Hub repository, e.g. fishaudio/openaudio-s1-mini")
    ap.add_argument("--revision", required=True, help="full commit hash to pin")
    ap.add_argument("--dest", required=True, type=Path, help="model folder to write")
    ap.add_argument("--token-file", type=Path, default=Path("/run/secrets/hf_token"))
    ap.add_argument("--cache-dir", type=Path, default=None, help="Hub cache (default: $HF_HUB_CACHE or HF's)")
    ap.add_argument("--allow-unpinned", action="store_true", help="accept a branch or tag as --revision")
    args = ap.parse_args(argv)

    if not COMMIT_RE.match(args.revision) and not args.allow_unpinned:
        print(
            f"error: --revision {args.revision!r} is not a 40-hex commit hash; pin one "
            f"(https://huggingface.co/{args.repo}/commits/main) or pass --allow-unpinned",
            file=sys.stderr,
        )
        return 2
    cache_dir = args.cache_dir or Path(os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache/huggingface/hub")
    token = read_token(args.token_file)
    print(f"fetching {args.repo}@{args.revision} ({'with' if token else 'without'} a token) into {args.dest}")
    try:
        snapshot = download(args.repo, args.revision, cache_dir, token)
        commit = snapshot.name  # the snapshot folder is named by the commit it resolved to
        if COMMIT_RE.match(args.revision) and commit != args.revision:
            raise FetchError(f"asked for {args.revision}, the Hub cache gave {commit}")
        sums = install(snapshot, args.dest)
        record(args.dest, args.repo, commit, sums)
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    total = sum((args.dest / rel).stat().st_size for rel in sums)
    print(f"wrote {len(sums)} files ({total / 2**30:.2f} GiB) to {args.dest}; model.pth sha256 {sums['model.pth']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
