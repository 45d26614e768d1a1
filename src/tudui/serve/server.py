"""`tudui serve`: the app on uvicorn, one line to say where, and a clean stop on SIGTERM or Ctrl-C."""
from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

import uvicorn

from tudui.config import ServeConfig
from tudui.errors import TuduiError
from tudui.serve.app import build_app

SHOWN_CLASSES = 5


def serve(cfg: ServeConfig) -> None:
    """Serve cfg.weights at cfg.host:cfg.port until SIGTERM or Ctrl-C; requests in flight then are
    answered before it returns."""
    app = build_app(cfg)        # the model first: a bad weights path costs no port
    listener = bind(cfg.host, cfg.port)
    port = listener.getsockname()[1]
    meta = app.state.service.meta
    names = ", ".join(meta.class_names[:SHOWN_CLASSES]) + (", ..." if meta.num_classes > SHOWN_CLASSES else "")
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"tudui serve: http://{host}:{port}/  {meta.model}, {meta.num_classes} classes ({names}); "
          f"POST /predict, API docs at /docs (its script from a CDN; offline: /openapi.json); Ctrl-C to stop",
          flush=True)
    # uvicorn's own log lines are left to warnings and errors: the line above says where it is.
    # limit_concurrency: past it uvicorn answers 503 at once, so slow or idle clients cannot use up
    # the process's open files (accept() then fails in a loop) or hold max_body each without bound.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, server_header=False,
                                           limit_concurrency=cfg.max_connections, timeout_keep_alive=5))
    with signals_end_quietly():
        server.run(sockets=[listener])


def bind(host: str, port: int) -> socket.socket:
    """A listening socket at host:port, or TuduiError saying why not (taken, no such address)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             proto=socket.IPPROTO_TCP)[0]
        # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say
        # TCP, and with it on, a keep-alive client waits ~40 ms per answer for a delayed ACK.
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
        return listener
    except OSError as e:
        raise TuduiError(f"cannot listen on {host} port {port}: {e.strerror or e} (change --host or "
                         f"--port)") from None


@contextlib.contextmanager
def signals_end_quietly() -> Iterator[None]:
    """After its graceful shutdown uvicorn raises the signal that stopped it again, for the handler
    it found (Python's: KeyboardInterrupt, or death by SIGTERM); handlers that do nothing make a stop
    by SIGTERM or Ctrl-C a plain exit 0, once the requests in flight are answered."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
