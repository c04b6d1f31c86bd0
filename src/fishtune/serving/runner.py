"""Running the app: the token policy, the listening socket, uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import threading

from omegaconf import DictConfig

from fishtune import redact
from fishtune.errors import UsageError

log = logging.getLogger("fishtune.serve")

TOKEN_ENV = "SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token(s: DictConfig) -> str | None:
    """``SERVE_TOKEN`` when auth is on. ``serve.auth=auto``: required unless bound to a loopback address;
    ``true``: always required; ``false``: never (anyone who reaches the port may synthesise)."""
    value = os.environ.get(TOKEN_ENV, "").strip() or None
    mode = str(s.auth).lower()  # auto | true | false: fishtune.schema
    if mode == "false":
        if value:
            log.warning("serve.auth=false: %s is ignored, the API is open to anyone who reaches the port", TOKEN_ENV)
        return None
    if value is None and (mode == "true" or not is_loopback(str(s.host))):
        raise UsageError(
            f"serving on {s.host} needs a token: {TOKEN_ENV} is not set",
            hint=f"set {TOKEN_ENV} (e.g. docker run -e {TOKEN_ENV}=$(openssl rand -hex 16)), "
            "bind serve.host=127.0.0.1, or serve.auth=false to serve without one",
        )
    if value is not None and len(value) < redact.MIN_SECRET:
        raise UsageError(f"{TOKEN_ENV} is too short", hint=f"use at least {redact.MIN_SECRET} characters")
    redact.remember(value)  # masked as *** in every log line
    return value


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port); a port in use is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as err:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {err.strerror or err}",
            hint="choose another port (serve.port=... or SERVE_PORT) or stop what uses it",
        ) from err
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app, sock: socket.socket) -> None:
    """uvicorn on ``sock`` until SIGINT/SIGTERM (docker stop), then a graceful shutdown and a normal return
    (uvicorn would re-raise the signal afterwards, which the CLI reports as an interrupted stage)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=10, server_header=False)
    Server(config).run(sockets=[sock])
