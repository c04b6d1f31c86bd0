"""A tiny stand-in for the Hugging Face Hub on 127.0.0.1, for the real huggingface_hub client.

It speaks the parts of the Hub's HTTP API that ``snapshot_download``, ``hf_hub_download``, ``HfApi.create_repo``,
``upload_folder`` and ``create_commit`` use (huggingface_hub 0.36):

    GET  /api/{models|datasets}/<repo>/revision/<rev>         repo info: commit sha + file list
    HEAD/GET /<repo>/resolve/<rev>/<path>, /datasets/<repo>/resolve/<rev>/<path>
                                                              X-Repo-Commit, ETag (sha256 for LFS files, git sha1
                                                              otherwise), Content-Length; GET honours Range
    POST /api/repos/create, /api/validate-yaml
    POST /api/{models|datasets}/<repo>/preupload/<rev>        upload mode (lfs for big/binary files) + remote oid
    POST /<repo>.git/info/lfs/objects/batch, PUT /lfs/<oid>   basic LFS transfer
    POST /api/{models|datasets}/<repo>/commit/<rev>           ndjson commit

Errors look like the Hub's: ``X-Error-Code: RepoNotFound | GatedRepo | RevisionNotFound | EntryNotFound`` and
401 ``Invalid credentials in Authorization header`` for a token it does not know. Knobs for fault tests:
``fail_next[<substring of path>] = n`` answers 500 n times; ``throttle[<file name>] = bytes per second``;
``corrupt.add(<file name>)`` serves different bytes than the ETag promises; ``redirect_lfs = True`` answers large
files as the real Hub does, with a 302 to a CDN on another host name (``localhost`` instead of ``127.0.0.1``) that
refuses requests carrying an Authorization header (a signed URL needs none). Loopback only; it shuts itself
down after ``lifetime`` seconds even if a test forgets to.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".pth", ".ckpt", ".bin", ".safetensors", ".wav", ".tar", ".gz", ".tgz", ".zip", ".npy")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) > 100_000


class Repo:
    def __init__(self, gated: bool = False):
        self.gated = gated
        self.commits: list[tuple[str, dict[str, bytes]]] = []

    @property
    def head(self) -> tuple[str, dict[str, bytes]]:
        return self.commits[-1] if self.commits else ("0" * 40, {})

    def commit(self, files: dict[str, bytes], deleted: tuple[str, ...] = ()) -> str:
        tree = dict(self.head[1])
        tree.update(files)
        for d in deleted:
            tree.pop(d, None)
        sha = hashlib.sha1(json.dumps(sorted((k, git_sha1(v)) for k, v in tree.items())).encode()).hexdigest()
        sha = hashlib.sha1(f"{len(self.commits)}:{sha}".encode()).hexdigest()
        self.commits.append((sha, tree))
        return sha

    def at(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        if rev in ("main", self.head[0]) and self.commits:
            return self.head
        for sha, tree in self.commits:
            if sha == rev:
                return sha, tree
        return None


class FakeHub:
    def __init__(self, tokens: set[str] | None = None, lifetime: float = 600.0):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.tokens = set(tokens or ())
        self.lfs: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.fail_next: dict[str, int] = {}
        self.throttle: dict[str, float] = {}
        self.corrupt: set[str] = set()
        self.redirect_lfs = False
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub._handle(self, "GET")

            def do_HEAD(self):
                hub._handle(self, "HEAD")

            def do_POST(self):
                hub._handle(self, "POST")

            def do_PUT(self):
                hub._handle(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()

    # -- set-up helpers ------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model", gated: bool = False) -> str:
        repo = self.repos.setdefault((repo_type, repo_id), Repo(gated=gated))
        return repo.commit(files)

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        return dict(self.repos[(repo_type, repo_id)].head[1])

    def commits(self, repo_id: str, repo_type: str = "model") -> list[str]:
        return [sha for sha, _ in self.repos[(repo_type, repo_id)].commits]

    def seen(self, method: str | None = None, contains: str = "") -> list[dict]:
        return [r for r in self.requests if (method is None or r["method"] == method) and contains in r["path"]]

    # -- request handling ----------------------------------------------------------------------------------
    def _send(self, h, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        h.send_response(code)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if body and not head:
            h.wfile.write(body)

    def _json(self, h, obj, code: int = 200, headers: dict | None = None) -> None:
        self._send(h, code, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, h, code: int, error_code: str | None, message: str, head: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if error_code:
            headers["X-Error-Code"] = error_code
        self._send(h, code, json.dumps({"error": message}).encode(), headers, head=head)

    def _auth(self, h) -> tuple[bool, str | None]:
        """(ok, token): a token we do not know is a 401 like the Hub's."""
        value = h.headers.get("Authorization", "")
        tok = value[7:] if value.startswith("Bearer ") else None
        return (tok is None or tok in self.tokens), tok

    def _handle(self, h, method: str) -> None:
        path = unquote(urlparse(h.path).path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        ok, tok = self._auth(h)
        with self.lock:
            self.requests.append(
                {"method": method, "path": path, "range": h.headers.get("Range"), "token": tok, "size": len(body)}
            )
            for key, n in list(self.fail_next.items()):
                if key in path and n > 0:
                    self.fail_next[key] = n - 1
                    return self._error(h, 500, None, "Internal Error (injected)", head=method == "HEAD")
        if path.startswith("/cdn/"):
            return self._cdn(h, method, path)
        if not ok:
            return self._error(h, 401, None, "Invalid credentials in Authorization header", head=method == "HEAD")
        try:
            return self._route(h, method, path, body, tok)
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _repo(self, h, repo_type: str, repo_id: str, tok: str | None, head: bool = False) -> Repo | None:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(h, 404, "RepoNotFound", "Repository not found", head=head)
            return None
        if repo.gated and tok is None:
            self._error(h, 403, "GatedRepo", "Access to this repo is restricted", head=head)
            return None
        return repo

    def _route(self, h, method: str, path: str, body: bytes, tok: str | None) -> None:
        m = re.fullmatch(r"/api/(models|datasets)/(.+?)/revision/(.+)", path)
        if m and method == "GET":
            rtype, repo_id, rev = m.group(1)[:-1], m.group(2), m.group(3)
            repo = self._repo(h, rtype, repo_id, tok)
            if repo is None:
                return None
            found = repo.at(rev)
            if found is None:
                return self._error(h, 404, "RevisionNotFound", "Invalid rev id")
            sha, tree = found
            return self._json(
                h,
                {
                    "id": repo_id,
                    "sha": sha,
                    "private": False,
                    "gated": repo.gated,
                    "siblings": [{"rfilename": f} for f in sorted(tree)],
                },
            )
        m = re.fullmatch(r"/(datasets/)?(.+?)/resolve/(.+?)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            rtype = "dataset" if m.group(1) else "model"
            repo = self._repo(h, rtype, m.group(2), tok, head=method == "HEAD")
            if repo is None:
                return None
            found = repo.at(m.group(3))
            if found is None:
                return self._error(h, 404, "RevisionNotFound", "Invalid rev id", head=method == "HEAD")
            sha, tree = found
            name = m.group(4)
            if name not in tree:
                return self._error(h, 404, "EntryNotFound", "Entry not found", head=method == "HEAD")
            data = tree[name]
            etag = hashlib.sha256(data).hexdigest() if is_lfs(name, data) else git_sha1(data)
            if name in self.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if self.redirect_lfs and is_lfs(name, data):
                port = self.server.server_address[1]
                cdn = {"Location": f"http://localhost:{port}/cdn/{etag}?name={name}", "X-Linked-Etag": f'"{etag}"'}
                cdn |= {"X-Linked-Size": str(len(data)), "X-Repo-Commit": sha, "ETag": '"redirect"'}
                return self._send(h, 302, b"", cdn, head=method == "HEAD")
            if method == "HEAD":
                return self._send(h, 200, b"", {**headers, "Content-Length": str(len(data))}, head=True)
            return self._serve(h, name, data, headers)
        return self._more_routes(h, method, path, body, tok)

    def _cdn(self, h, method: str, path: str) -> None:
        """The CDN a large file redirects to: the bytes by sha256; an Authorization header is refused (as S3 does)."""
        if h.headers.get("Authorization"):
            return self._error(h, 400, None, "Only one auth mechanism allowed", head=method == "HEAD")
        sha = path.split("/")[2].split("?")[0]
        for repo in self.repos.values():
            for _, tree in repo.commits:
                for name, data in tree.items():
                    if hashlib.sha256(data).hexdigest() == sha:
                        if name in self.corrupt:
                            data = bytes([data[0] ^ 0xFF]) + data[1:]
                        return self._serve(h, name, data, {"ETag": '"cdn-etag"', "Accept-Ranges": "bytes"})
        return self._error(h, 404, None, "no such object")

    def _serve(self, h, name: str, data: bytes, headers: dict) -> None:
        """GET with Range support and the optional throttle."""
        start = 0
        rng = h.headers.get("Range")
        if rng and (rm := re.fullmatch(r"bytes=(\d+)-", rng.strip())):
            start = int(rm.group(1))
        part = data[start:]
        h.send_response(206 if start else 200)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(part)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        rate = self.throttle.get(name)
        step = 1 << 20 if rate else len(part) or 1
        for i in range(0, len(part), step):
            h.wfile.write(part[i : i + step])
            h.wfile.flush()
            if rate:
                time.sleep(step / rate)
        return None

    def _more_routes(self, h, method: str, path: str, body: bytes, tok: str | None) -> None:
        if path == "/api/repos/create" and method == "POST":
            req = json.loads(body or b"{}")
            rtype = req.get("type") or "model"
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            self.repos.setdefault((rtype, repo_id), Repo())
            prefix = "" if rtype == "model" else f"{rtype}s/"
            return self._json(h, {"url": f"{self.url}/{prefix}{repo_id}"})
        if path == "/api/validate-yaml" and method == "POST":
            return self._json(h, {})
        m = re.fullmatch(r"/api/(models|datasets)/(.+?)/preupload/(.+)", path)
        if m and method == "POST":
            repo = self._repo(h, m.group(1)[:-1], m.group(2), tok)
            if repo is None:
                return None
            tree = repo.head[1]
            out = []
            for f in json.loads(body)["files"]:
                sample = base64.b64decode(f["sample"])
                lfs = is_lfs(f["path"], sample) or f["size"] > 100_000
                old = tree.get(f["path"])
                oid = None
                if old is not None:
                    oid = hashlib.sha256(old).hexdigest() if lfs else git_sha1(old)
                out.append(
                    {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
            return self._json(h, {"files": out})
        m = re.fullmatch(r"/(datasets/)?(.+?)\.git/info/lfs/objects/batch", path)
        if m and method == "POST":
            req = json.loads(body)
            objs = []
            for o in req["objects"]:
                item = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in self.lfs:
                    item["actions"] = {"upload": {"href": f"{self.url}/lfs/{o['oid']}"}}
                objs.append(item)
            return self._json(h, {"transfer": "basic", "objects": objs})
        m = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
        if m and method == "PUT":
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return self._error(h, 400, None, "sha256 mismatch")
            self.lfs[m.group(1)] = body
            return self._send(h, 200)
        m = re.fullmatch(r"/api/(models|datasets)/(.+?)/commit/(.+)", path)
        if m and method == "POST":
            rtype, repo_id = m.group(1)[:-1], m.group(2)
            repo = self._repo(h, rtype, repo_id, tok)
            if repo is None:
                return None
            files: dict[str, bytes] = {}
            deleted = []
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                v = item["value"]
                if item["key"] == "file":
                    files[v["path"]] = base64.b64decode(v["content"])
                elif item["key"] == "lfsFile":
                    if v["oid"] not in self.lfs:
                        return self._error(h, 422, None, f"LFS object {v['oid']} was not uploaded")
                    files[v["path"]] = self.lfs[v["oid"]]
                elif item["key"] in ("deletedFile", "deletedFolder"):
                    deleted.append(v["path"])
            sha = repo.commit(files, tuple(deleted))
            # The client parses this URL against its own default endpoint, as the real Hub's are.
            prefix = "" if rtype == "model" else f"{rtype}s/"
            url = f"https://huggingface.co/{prefix}{repo_id}/commit/{sha}"
            return self._json(h, {"commitUrl": url, "commitOid": sha})
        return self._error(h, 404, None, f"no route for {method} {path}")
