"""The Starlette application: the page, the speech API, health and model listing, the run's report.

Errors are JSON in OpenAI's shape, ``{"error": {"message": "<one line>", "type": ...}}``, with the HTTP status
saying who is at fault: 4xx for the request, 503 (+ ``Retry-After``) when the queue is full, 504 past the
per-request timeout, 500 for a failure of the model (logged with its traceback; the server keeps serving).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from urllib.parse import quote

from omegaconf import DictConfig, OmegaConf
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fishtune import generation
from fishtune.errors import FishtuneError
from fishtune.layout import RunLayout
from fishtune.serving import encode
from fishtune.serving.engine import Engine, Job
from fishtune.serving.scheduler import Busy, Scheduler, TimedOut
from fishtune.serving.speech import BadRequest, parse

log = logging.getLogger("fishtune.serve")

COOKIE = "fishtune_token"
Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": " ".join(message.split()), "type": kind}}, status, headers=headers)


class Server:
    """The routes over one engine and its queue; ``token`` (or None) guards everything but the page and health."""

    def __init__(self, cfg: DictConfig, engine: Engine, token: str | None):
        self.cfg, self.s, self.engine, self.token = cfg, cfg.serve, engine, token
        self.scheduler = Scheduler(int(self.s.max_queue), float(self.s.timeout_seconds))
        self.started = time.time()
        run = RunLayout.of(cfg)
        self.report_dir, self.report_html, self.metrics_path = run.report, run.report_html, run.metrics
        self.model_id = f"fishtune-{cfg.run_name}-{engine.kind}"

    def authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def guarded(self, handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            if not self.authorized(request):
                return error(
                    401,
                    "missing or wrong token: send Authorization: Bearer <SERVE_TOKEN>",
                    "authentication_error",
                    {"WWW-Authenticate": "Bearer"},
                )
            return await handler(request)

        return wrapper

    async def page(self, request: Request) -> Response:
        return HTMLResponse(resources.files("fishtune.serving").joinpath("page.html").read_text(encoding="utf-8"))

    async def healthz(self, request: Request) -> Response:
        sched = self.scheduler
        return JSONResponse(
            {
                "status": "ok",
                "model": self.engine.kind,
                "queue": {"pending": sched.pending, "max": sched.max_pending, **sched.stats},
                "uptime_seconds": round(time.time() - self.started, 1),
            }
        )

    async def models(self, request: Request) -> Response:
        card = {"id": self.model_id, "object": "model", "created": int(self.started), "owned_by": "fishtune"}
        return JSONResponse({"object": "list", "data": [{**card, **self.engine.describe()}]})

    async def settings(self, request: Request) -> Response:
        """What the page needs to draw its controls (no secrets)."""
        s = self.s
        return JSONResponse(
            {
                "model": self.model_id,
                "auth": bool(self.token),
                "voices": sorted(self.engine.voices),
                "formats": list(encode.MEDIA_TYPES),
                "default_format": str(s.default_format),
                "max_chars": int(s.max_chars),
                "defaults": OmegaConf.to_container(s.defaults),
                "limits": OmegaConf.to_container(s.limits),
                "report": self.report_html.is_file(),
                "training": self.metrics_path.is_file(),
            }
        )

    async def normalize(self, request: Request) -> Response:
        try:
            body = await request.json()
            raw = body["input"] if isinstance(body, dict) else None
        except Exception:
            raw = None
        if not isinstance(raw, str) or len(raw) > int(self.s.max_chars):
            return error(400, f'send {{"input": "text"}} with at most {int(self.s.max_chars)} characters')
        return JSONResponse({"input": raw, "normalized": self.engine.normalize(raw)})

    async def report(self, request: Request) -> Response:
        rel = request.path_params.get("path") or self.report_html.name
        root = self.report_dir.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return error(404, f"no {rel} in the run's report (run STAGE=evaluate first)", "not_found")
        return FileResponse(path)

    async def training(self, request: Request) -> Response:
        from fishtune.evaluation.report import curves_svg, loss_curves

        svg = curves_svg(loss_curves(self.metrics_path)) if self.metrics_path.is_file() else None
        if not svg:
            return error(404, "no training metrics in this run (train/metrics.jsonl)", "not_found")
        return Response(svg, media_type="image/svg+xml")

    async def speech(self, request: Request) -> Response:
        try:
            job, fmt = await parse(request, self.s, self.engine)
            if job.stream:
                return self.stream(job, fmt)
            samples = await self.scheduler.run(lambda stop: self.engine.speak(job, stop))
            data = await asyncio.get_running_loop().run_in_executor(
                None, encode.encode, samples, self.engine.sample_rate, fmt
            )
        except Exception as err:
            return self.failure(err)
        log.info(
            "speech: %d chars -> %.2f s of audio in %.2f s (%s, voice %s)",
            len(job.text),
            job.info["seconds"],
            job.info["compute_seconds"],
            fmt,
            job.info["voice"],
        )
        return Response(data, media_type=encode.MEDIA_TYPES[fmt], headers=self.audio_headers(job, fmt))

    def audio_headers(self, job: Job, fmt: str) -> dict[str, str]:
        headers = {
            "Content-Disposition": f'inline; filename="speech.{fmt}"',
            "X-Normalized-Text": quote(job.text),  # percent-encoded UTF-8 (headers are latin-1)
            "X-Sample-Rate": str(self.engine.sample_rate),
            "Cache-Control": "no-store",
        }
        if "seconds" in job.info:
            headers["X-Audio-Seconds"] = f"{job.info['seconds']:.3f}"
            headers["X-Compute-Seconds"] = f"{job.info['compute_seconds']:.3f}"
        return headers

    def stream(self, job: Job, fmt: str) -> Response:
        """Audio sentence by sentence as it is made: a wav header of unknown length (or nothing for pcm), then
        16-bit samples. A full queue is still a 503: the slot is taken before the response starts."""
        self.scheduler.admit()
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        def on_chunk(wave) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, encode.pcm16(wave))

        task = asyncio.ensure_future(self.scheduler.execute(lambda stop: self.engine.speak(job, stop, on_chunk)))
        task.add_done_callback(lambda _: chunks.put_nowait(None))

        async def body():
            if fmt == "wav":
                yield encode.wav_header(self.engine.sample_rate, None)
            try:
                while (chunk := await chunks.get()) is not None:
                    yield chunk
            finally:
                if not task.done():
                    task.cancel()
            if task.exception() is not None:
                log.warning("speech stream ended early: %s", _one_line(task.exception()))

        return StreamingResponse(body(), media_type=encode.MEDIA_TYPES[fmt], headers=self.audio_headers(job, fmt))

    def failure(self, err: Exception) -> Response:
        if isinstance(err, BadRequest):
            return error(err.status, err.reason)
        if isinstance(err, Busy):
            return error(
                503,
                f"the server is busy ({self.scheduler.max_pending} requests queued); retry in {err.retry_after} s",
                "server_busy",
                {"Retry-After": str(err.retry_after)},
            )
        if isinstance(err, TimedOut | generation.Stopped):
            return error(504, f"synthesis took longer than {float(self.s.timeout_seconds):g} s", "timeout")
        if isinstance(err, FishtuneError):
            return error(500, err.one_line(), "synthesis_error")
        log.error("speech: synthesis failed", exc_info=err)
        return error(500, f"synthesis failed: {_one_line(err)}", "server_error")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "") or "error"
    return error(status, f"{detail}: {request.method} {request.url.path}", "not_found" if status == 404 else "http")


def build_app(cfg: DictConfig, engine: Engine, token: str | None) -> tuple[Starlette, Server]:
    server = Server(cfg, engine, token)
    g = server.guarded
    routes = [
        Route("/", server.page),
        Route("/healthz", server.healthz),
        Route("/v1/config", server.settings),
        Route("/v1/models", g(server.models)),
        Route("/v1/normalize", g(server.normalize), methods=["POST"]),
        Route("/v1/audio/speech", g(server.speech), methods=["POST"]),
        Route("/v1/training.svg", g(server.training)),
        Route("/report/", g(server.report)),
        Route("/report/{path:path}", g(server.report)),
    ]
    # speech.read_fields answers an oversized Content-Length with its own 413; this is the backstop for bodies
    # sent without one (chunked), counted as they arrive.
    backstop = 2 * int(float(cfg.serve.max_upload_mb) * 1e6)
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, max_body_size=backstop)
    return app, server
