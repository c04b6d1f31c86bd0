"""Stage ``serve``: a web page and an HTTP API on the fine-tuned model, until stopped (Ctrl-C, docker stop).

Loads the model once (``serve.model``: the merged folder, else base + the trained LoRA, else the base), binds
``serve.host:serve.port`` and serves ``/`` (the page), ``POST /v1/audio/speech`` (OpenAI's speech shape),
``GET /v1/models``, ``GET /healthz`` and the run's report under ``/report/``. Writes ``serve.json`` (the URL,
for scripts and tests) once it listens.
"""

from __future__ import annotations

import logging
import os
import time

from omegaconf import DictConfig

from fishtune.layout import RunLayout
from fishtune.results import StageResult
from fishtune.runstate import write_json_atomic
from fishtune.serving import runner

log = logging.getLogger("fishtune.serve")


def run(cfg: DictConfig) -> StageResult:
    s = cfg.serve
    # Fish Speech's per-token progress bar, once per request otherwise; tqdm reads this when it is first
    # imported, so the model code is imported only after it is set.
    os.environ.setdefault("TQDM_DISABLE", "1")
    from fishtune.serving.app import build_app
    from fishtune.serving.engine import Engine

    token = runner.token(s)  # before loading anything: a missing token is a usage error
    sock = runner.bind(str(s.host), int(s.port))
    try:
        engine = Engine(cfg)
        app, server = build_app(cfg, engine, token)
        host, port = sock.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
        write_json_atomic(
            RunLayout.of(cfg).serve_info,
            {"url": url, "host": host, "port": port, "pid": os.getpid(), "model": engine.kind, "auth": bool(token)},
        )
        log.info("serve: listening on %s:%d: the page at %s, the API at %sv1/audio/speech", host, port, url, url)
        log.info("serve: %s; Ctrl-C (docker stop) stops", "token required" if token else "no token (loopback only)")
        started = time.time()
        runner.serve(app, sock)
    finally:
        sock.close()
    stats = server.scheduler.stats
    server.scheduler.close()
    log.info(
        "serve: stopped after %.0f s; %d requests answered, %d refused busy",
        time.time() - started,
        stats["done"],
        stats["busy"],
    )
    data = {"url": url, "requests": stats["done"], "busy": stats["busy"], "timed_out": stats["timed_out"]}
    return StageResult(f"{url} ({stats['done']} requests answered, {stats['busy']} refused busy)", data=data)
