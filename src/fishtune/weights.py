"""The one installer of base weights: a Hub model repo at a revision -> a checked model folder. Standard library only.

Used by the ``fetch`` stage (:func:`install`) and by the image build, whose weights stage copies this file and
:mod:`fishtune.errors` (also stdlib-only) onto a bare Python and runs it::

    python3 -m fishtune.weights --repo fishaudio/openaudio-s1-mini --revision <commit|main> \\
        --dest /opt/models/openaudio-s1-mini --pins configs/model/s1-mini.yaml \\
        [--token-file /run/secrets/hf_token] [--cache-dir DIR] [--endpoint URL] [--source TEXT]

What it does, in order:

1. asks the Hub (``GET /api/models/<repo>/revision/<rev>``) for the commit and the file list; a branch or tag
   resolves to a commit, which is what gets recorded (offline, ``HF_HUB_OFFLINE=1``: the listing saved in the
   cache by an earlier run of the same commit);
2. downloads each file (``/<repo>/resolve/<commit>/<file>``) into ``<cache>/fishtune-weights/<repo>/<commit>/``;
   an interrupted download resumes from its ``.incomplete`` file with an HTTP Range request; a redirect to
   another host (the Hub's CDN) does not carry the token;
3. checks each file: against the sha256 the Hub names a large (LFS) file by, a small file's git blob hash, and
   the pins (``model.files``: sha256 and size); a mismatching file is deleted from the cache (the next run
   downloads it again) and the install fails with one line;
4. refuses a listing without the required files, and runs an optional extra ``check`` (the fetch stage passes
   the "data only, no code in the pickles" check, which needs torch);
5. replaces ``dest`` atomically with real files, ``SHA256SUMS`` (``sha256sum -c`` format) and a one-line
   ``WEIGHTS_SOURCE`` (printed by ``doctor``).

An unpinned revision (a branch or tag) is accepted only when the pins cover every large file (the content is then
fixed even though the name is not), or with ``allow_unpinned``. The token comes from the caller, ``HF_TOKEN`` or
a file (a BuildKit secret at build time); it is sent only to the Hub's host and never printed.
Exit codes of the command: 0 done, 1 download or check failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from fishtune.errors import FishtuneError

REQUIRED = ("model.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json", "codec.pth")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_ENDPOINT = "https://huggingface.co"
TOKENS_URL = "https://huggingface.co/settings/tokens"
OWNED = ".fishtune-output"  # as fishtune.runstate.OWNED: "fishtune made this folder and may replace it"
CHUNK = 1 << 20
LARGE = 10 << 20  # files above this need a pin for an unpinned revision


class WeightsError(FishtuneError):
    """The weights could not be installed. ``transient``: the network or server failed; a rerun may work."""

    def __init__(self, message: str, *, hint: str | None = None, transient: bool = False):
        super().__init__(message, hint=hint)
        self.transient = transient


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    p = Path(path)
    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"blob {p.stat().st_size}\0".encode())
    with open(p, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def token_lines(text: str) -> list[str]:
    """The lines of a token file that count: not blank, not a ``#`` comment (a usable file has exactly one)."""
    return [x for x in (line.strip() for line in text.splitlines()) if x and not x.startswith("#")]


def read_token(path: str | os.PathLike | None) -> str | None:
    """``HF_TOKEN``, else the one non-comment line of ``path`` (a secret file), else None (anonymous)."""
    env = (os.environ.get("HF_TOKEN") or "").strip()
    if env:
        return env
    if path is None or not Path(path).is_file():
        return None
    lines = token_lines(Path(path).read_text(encoding="utf-8"))
    if len(lines) > 1:
        raise WeightsError(
            f"{path} holds {len(lines)} lines that are not comments",
            hint="keep only the token in the file (comment lines start with #)",
        )
    return lines[0] if lines else None


_PIN_LINE = re.compile(r"^\s+([\w.\-/]+):\s*\{\s*sha256:\s*([0-9a-fA-F]{64})\s*,\s*bytes:\s*(\d+)\s*\}\s*(#.*)?$")


def read_pins(config: str | os.PathLike) -> dict[str, dict]:
    """The ``files:`` pins of a model config (``configs/model/*.yaml``) without a YAML library.

    Reads the block form fishtune's configs use (``  name: {sha256: <64 hex>, bytes: <int>}`` lines under
    ``files:``); anything else in that block is an error, so a reformatted config cannot silently drop a pin.
    """
    pins: dict[str, dict] = {}
    inside = False
    for n, line in enumerate(Path(config).read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"^files:\s*(\{\s*\})?\s*(#.*)?$", line):
            inside = not line.split("#")[0].rstrip().endswith("{}")
            continue
        if not inside:
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            break
        m = _PIN_LINE.match(line)
        if not m:
            raise WeightsError(
                f"{config}:{n}: cannot read this model.files pin",
                hint="write it as `  <file>: {sha256: <64 hex>, bytes: <size>}` on one line",
            )
        pins[m.group(1)] = {"sha256": m.group(2).lower(), "bytes": int(m.group(3))}
    return pins


# -- HTTP --------------------------------------------------------------------------------------------------------
class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, dropping the token when the next host differs (a CDN's signed URL needs none)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_Redirects)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_HEAD_OPENER = urllib.request.build_opener(_NoRedirect)


class Hub:
    """The few Hub requests the installer needs, with one-line errors."""

    def __init__(self, repo: str, token: str | None, endpoint: str | None = None, timeout: float = 60.0):
        self.repo, self.token, self.timeout = repo, token, timeout
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    def _request(self, url: str, method: str = "GET", headers: dict | None = None) -> urllib.request.Request:
        req = urllib.request.Request(url, method=method, headers={"User-Agent": "fishtune-weights", **(headers or {})})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return req

    def error(self, err: BaseException, revision: str, what: str = "") -> WeightsError:
        where = f"model repository {self.repo}@{revision}"
        if isinstance(err, urllib.error.HTTPError):
            code = err.headers.get("X-Error-Code", "") if err.headers else ""
            message = (err.headers.get("X-Error-Message", "") if err.headers else "") or str(err.reason)
            if code == "GatedRepo":
                return WeightsError(
                    f"{where} is gated: your account has not been granted access",
                    hint=f"accept the conditions at {self.endpoint}/{self.repo} with the account whose token you "
                    "pass (HF_TOKEN, HF_TOKEN_FILE or the hf_token build secret), then rerun",
                )
            if err.code == 401 and "invalid credentials" in message.lower():
                return WeightsError(
                    f"the Hub rejected the token for {where} (401: invalid or expired credentials)",
                    hint=f"pass a valid token from {TOKENS_URL}",
                )
            if code == "RepoNotFound" or (err.code in (401, 404) and not code and not what):
                return WeightsError(
                    f"{where} not found, or it is private and the token has no access to it",
                    hint="check model.repo_id and pass a token for private repos",
                )
            if code == "RevisionNotFound":
                return WeightsError(
                    f"revision {revision!r} does not exist in {self.repo}",
                    hint="use a branch, tag or full commit hash from the repo's history",
                )
            if code == "EntryNotFound":
                return WeightsError(f"{what or 'a file'} is listed but not found in {where}", hint="rerun")
            if err.code in (401, 403):
                return WeightsError(
                    f"the Hub refused access to {where}{(' ' + what) if what else ''} ({err.code}: {message})",
                    hint="use a token with read access to the repo",
                )
            return WeightsError(
                f"Hub request for {where}{(' ' + what) if what else ''} failed: HTTP {err.code} {message}",
                hint="rerun later; the download resumes",
                transient=True,
            )
        reason = getattr(err, "reason", err)
        return WeightsError(
            f"cannot download {where}{(' ' + what) if what else ''}: the Hub ({self.endpoint}) is not reachable "
            f"({type(reason).__name__}: {str(reason).splitlines()[0] if str(reason) else ''})",
            hint="check the network or HF_ENDPOINT; with HF_HUB_OFFLINE=1 the files must be in the cache already",
            transient=True,
        )

    def listing(self, revision: str) -> tuple[str, list[str]]:
        """(commit, file names) of ``revision``."""
        url = f"{self.endpoint}/api/models/{self.repo}/revision/{urllib.parse.quote(revision, safe='')}"
        try:
            with _OPENER.open(self._request(url), timeout=self.timeout) as resp:
                info = json.loads(resp.read().decode("utf-8"))
        except (urllib.error.URLError, OSError) as err:
            raise self.error(err, revision) from None
        except ValueError as err:
            raise WeightsError(
                f"the Hub's answer for {self.repo}@{revision} is not JSON ({err})", transient=True
            ) from None
        commit = str(info.get("sha") or "")
        names = sorted(str(s["rfilename"]) for s in info.get("siblings") or [] if s.get("rfilename"))
        if not COMMIT_RE.match(commit):
            raise WeightsError(f"the Hub gave no commit for {self.repo}@{revision}", transient=True)
        return commit, names

    def expected(self, commit: str, rel: str) -> tuple[str | None, int | None]:
        """The Hub's (etag, size) for a file: the sha256 for LFS files, the git blob sha1 otherwise."""
        url = self.url(commit, rel)
        try:
            resp = _HEAD_OPENER.open(self._request(url, "HEAD"), timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code not in (301, 302, 303, 307, 308):
                raise self.error(err, commit, rel) from None
            resp = err
        except (urllib.error.URLError, OSError) as err:
            raise self.error(err, commit, rel) from None
        with contextlib.closing(resp):
            h = resp.headers
            etag = (h.get("X-Linked-Etag") or h.get("ETag") or "").strip().removeprefix("W/").strip('"').lower()
            size = h.get("X-Linked-Size") or (h.get("Content-Length") if resp.status == 200 else None)
        return (etag or None), (int(size) if size and size.isdigit() else None)

    def url(self, commit: str, rel: str) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{commit}/{urllib.parse.quote(rel)}"

    def download(self, commit: str, rel: str, out: Path, say: Callable[[str], None]) -> None:
        """``rel`` into ``out``, continuing ``out.incomplete`` with a Range request."""
        part = out.with_name(out.name + ".incomplete")
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = _OPENER.open(self._request(self.url(commit, rel), headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # nothing left to fetch: the partial file is complete
                os.replace(part, out)
                return
            raise self.error(err, commit, rel) from None
        except (urllib.error.URLError, OSError) as err:
            raise self.error(err, commit, rel) from None
        with contextlib.closing(resp):
            if have and resp.status != 206:
                have = 0  # the server ignored the Range: start over
            if have:
                say(f"{rel}: resuming at {have / 2**20:.1f} MiB")
            total = int(resp.headers.get("Content-Length") or 0) + have
            started, last = time.monotonic(), time.monotonic()
            try:
                with open(part, "ab" if have else "wb") as fh:
                    while block := resp.read(CHUNK):
                        fh.write(block)
                        if time.monotonic() - last > 30 and total:
                            last = time.monotonic()
                            say(f"{rel}: {fh.tell() / 2**20:.0f} / {total / 2**20:.0f} MiB")
            except OSError as err:
                raise self.error(err, commit, rel) from None
        if total and part.stat().st_size != total:
            raise WeightsError(
                f"download of {rel} from {self.repo}@{commit} ended early ({part.stat().st_size} of {total} bytes)",
                hint="rerun: it resumes",
                transient=True,
            )
        os.replace(part, out)
        took = time.monotonic() - started
        say(f"{rel}: {total / 2**20:.1f} MiB in {took:.0f} s")


# -- checks and the install --------------------------------------------------------------------------------------
def verify(path: Path, rel: str, etag: str | None, pin: dict | None) -> str:
    """sha256 of ``path``, checked against the Hub's etag and the pin; a bad file is deleted."""
    digest = sha256_file(path)
    bad = None
    if pin and pin.get("bytes") is not None and int(pin["bytes"]) != path.stat().st_size:
        bad = f"its size {path.stat().st_size} differs from the pinned {pin['bytes']}"
    elif etag and SHA256_RE.match(etag) and etag != digest:
        bad = f"its sha256 {digest[:16]}... differs from the Hub's {etag[:16]}..."
    elif etag and COMMIT_RE.match(etag) and git_blob_sha1(path) != etag:
        bad = f"its git hash differs from the Hub's {etag[:16]}..."
    elif pin and pin.get("sha256") and str(pin["sha256"]).lower() != digest:
        bad = f"its sha256 {digest[:16]}... differs from the pinned {str(pin['sha256'])[:16]}..."
    if bad:
        with contextlib.suppress(OSError):
            path.unlink()
        raise WeightsError(
            f"downloaded file {rel} is corrupt: {bad}; removed it from the cache",
            hint="rerun to download it again (check model.files if you changed the pins)",
        )
    return digest


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    dst.chmod(0o644)


def _replace_dir(dest: Path, fill: Callable[[Path], None]) -> None:
    """Build the folder in a hidden temp folder next to ``dest`` and swap it in (never a mix of old and new)."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise WeightsError(f"the model folder {dest} is a file or link", hint="set model.path to a folder")
    if dest.is_dir() and any(dest.iterdir()):
        owned = any((dest / m).is_file() for m in (OWNED, "WEIGHTS_SOURCE", ".fishtune-source.json"))
        if not owned:
            raise WeightsError(
                f"the model folder {dest} is not empty and was not made by fishtune: refusing to replace it",
                hint="point model.path at a new or empty folder",
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch.", dir=dest.parent))
    try:
        fill(tmp)
        (tmp / OWNED).write_text("made by fishtune; it may replace this folder as a whole\n", encoding="utf-8")
        for p in [tmp, *tmp.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)  # readable by the image's unprivileged user
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _not_cached(what: str, where: Path) -> WeightsError:
    return WeightsError(
        f"{what} is not in the cache {where} and HF_HUB_OFFLINE=1 forbids downloading it",
        hint="run once with network access, or unset HF_HUB_OFFLINE",
    )


def _resolve(hub: Hub, store: Path, revision: str, required: tuple[str, ...]) -> tuple[str, list[str]]:
    """``(commit, file names)`` of ``revision``: from the Hub, or offline from the cache's record of it."""
    repo = hub.repo
    if _offline():
        try:
            commit = revision if COMMIT_RE.match(revision) else (store / "refs" / revision).read_text().strip()
            names = json.loads((store / commit / ".listing.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise _not_cached(f"{repo}@{revision}", store) from None
    else:
        commit, names = hub.listing(revision)
    if COMMIT_RE.match(revision) and commit != revision:
        raise WeightsError(f"asked for {repo}@{revision}, the Hub gave {commit}", hint="check the revision")
    missing = [f for f in required if f not in names]
    if missing:
        raise WeightsError(
            f"{repo}@{commit} lacks {', '.join(missing)}: not a Fish Speech model repository",
            hint="set model.repo_id to a repo with the openaudio-s1-mini layout",
        )
    return commit, names


def _remember(store: Path, revision: str, commit: str, names: list[str]) -> Path:
    """The snapshot folder of ``commit`` in the cache, with its listing (and the branch -> commit record)."""
    snap = store / commit
    snap.mkdir(parents=True, exist_ok=True)
    (snap / ".listing.json").write_text(json.dumps(names), encoding="utf-8")
    if not COMMIT_RE.match(revision):
        (store / "refs").mkdir(exist_ok=True)
        (store / "refs" / revision).write_text(commit, encoding="utf-8")
    return snap


def _download_all(
    hub: Hub, snap: Path, commit: str, revision: str, names: list[str], pins: dict, allow_unpinned: bool, say
) -> tuple[dict[str, Path], dict[str, str | None]]:
    """Every listed file in the snapshot (downloaded when missing): ``(paths, etags)``; refuses unsafe names and,
    on a branch, large files without a sha256 pin."""
    repo, offline = hub.repo, _offline()
    found: dict[str, Path] = {}
    etags: dict[str, str | None] = {}
    for rel in names:
        out = snap / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise WeightsError(f"{repo}@{commit} lists an unsafe file name {rel!r}", hint="use another repo")
        etag, size = (None, None) if offline else hub.expected(commit, rel)
        etags[rel] = etag
        if not out.is_file():
            if offline:
                raise _not_cached(f"{rel} of {repo}@{commit}", snap)
            hub.download(commit, rel, out, say)
        found[rel] = out
        big = (size or out.stat().st_size) > LARGE
        if big and not COMMIT_RE.match(revision) and rel not in pins and not allow_unpinned:
            raise WeightsError(
                f"revision {revision!r} of {repo} is a branch or tag and {rel} has no sha256 pin: the download "
                "would depend on the day it runs",
                hint=f"pin a 40-hex commit (see {hub.endpoint}/{repo}/commits/main) or add {rel} to model.files",
            )
    unmatched = [p for p in pins if p not in found]
    if unmatched:
        raise WeightsError(
            f"{repo}@{commit} lacks the pinned {', '.join(unmatched)}",
            hint="check model.files against the repo, or pin the repo the pins are from",
        )
    return found, etags


def install(
    repo: str,
    revision: str | None,
    dest: str | os.PathLike,
    token: str | None,
    *,
    cache_dir: str | os.PathLike,
    endpoint: str | None = None,
    pins: dict[str, dict] | None = None,
    required: tuple[str, ...] = REQUIRED,
    source: str = "downloaded by fishtune fetch",
    allow_unpinned: bool = False,
    check: Callable[[dict[str, Path], str], None] | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Install ``repo@revision`` as a model folder at ``dest`` (see the module doc).

    Returns ``{"repo_id", "revision", "commit", "files", "bytes", "sha256"}``; raises :class:`WeightsError`.
    """
    dest, pins, revision = Path(dest), dict(pins or {}), revision or "main"
    hub = Hub(repo, token, endpoint)
    store = Path(cache_dir) / "fishtune-weights" / repo.replace("/", "--")
    commit, names = _resolve(hub, store, revision, required)
    if not COMMIT_RE.match(revision) and allow_unpinned:
        say(f"warning: revision {revision!r} of {repo} is not a commit hash: installing {commit} (recorded)")
    snap = _remember(store, revision, commit, names)
    found, etags = _download_all(hub, snap, commit, revision, names, pins, allow_unpinned, say)
    sums = {rel: verify(found[rel], rel, etags[rel], pins.get(rel)) for rel in names}
    if check is not None:
        check(found, f"{repo}@{commit}")

    def fill(tmp: Path) -> None:
        for rel, src in found.items():
            _place(src, tmp / rel)
        (tmp / "SHA256SUMS").write_text("".join(f"{h}  {r}\n" for r, h in sorted(sums.items())), encoding="utf-8")
        (tmp / "WEIGHTS_SOURCE").write_text(
            f"{source}: {repo}@{commit}, {len(sums)} files, sha256 in SHA256SUMS\n", encoding="utf-8"
        )

    _replace_dir(dest, fill)
    total = sum((dest / rel).stat().st_size for rel in sums)
    return {"repo_id": repo, "revision": revision, "commit": commit, "files": len(sums), "bytes": total, "sha256": sums}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Install pinned base weights from the Hugging Face Hub.")
    ap.add_argument("--repo", required=True, help="Hub model repository, e.g. fishaudio/openaudio-s1-mini")
    ap.add_argument("--revision", required=True, help="full commit hash (or a branch/tag when --pins cover it)")
    ap.add_argument("--dest", required=True, type=Path, help="model folder to write")
    ap.add_argument("--pins", type=Path, help="model config whose `files:` pins the content (configs/model/*.yaml)")
    ap.add_argument("--token-file", type=Path, default=Path("/run/secrets/hf_token"))
    ap.add_argument("--cache-dir", type=Path, default=None, help="download cache (default: $HF_HUB_CACHE or HF's)")
    ap.add_argument("--endpoint", default=None, help="Hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    ap.add_argument("--source", default="baked into the image", help="first words of WEIGHTS_SOURCE")
    ap.add_argument("--allow-unpinned", action="store_true", help="accept a branch or tag without pins")
    args = ap.parse_args(argv)
    if not args.revision.strip():
        print("error: --revision is empty; pass a commit hash or a branch (WEIGHTS_REVISION)", file=sys.stderr)
        return 2
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache/huggingface")
    cache_dir = args.cache_dir or Path(os.environ.get("HF_HUB_CACHE") or hf_home / "hub")
    token = None
    try:
        token = read_token(args.token_file)
        pins = read_pins(args.pins) if args.pins else {}
        print(f"fetching {args.repo}@{args.revision} ({'with' if token else 'without'} a token) into {args.dest}")
        out = install(
            args.repo,
            args.revision,
            args.dest,
            token,
            cache_dir=cache_dir,
            endpoint=args.endpoint,
            pins=pins,
            source=args.source,
            allow_unpinned=args.allow_unpinned,
        )
    except FishtuneError as err:
        text = err.one_line()
        print(f"error: {text.replace(token, '***') if token else text}", file=sys.stderr)
        return 1
    print(
        f"wrote {out['files']} files ({out['bytes'] / 2**30:.2f} GiB) of {args.repo}@{out['commit']} to {args.dest}; "
        f"pinned and checked: {', '.join(sorted(pins)) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
