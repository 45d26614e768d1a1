"""`tudui serve`: the app on uvicorn, one line to say where, and a clean stop on SIGTERM or Ctrl-C."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tudui.config_commands import ServeConfig
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
    server = uvicorn.Server(uvicorn_config(app, cfg))
    with signals_end_quietly():
        server.run(sockets=[listener])


def uvicorn_config(app, cfg: ServeConfig) -> uvicorn.Config:
    """How uvicorn runs the app: its own log lines left to warnings and errors (serve's first line
    says where it is); past cfg.max_connections it answers 503 at once, so slow or idle clients
    cannot use up the process's open files (accept() then fails in a loop); and a request's head
    must arrive within cfg.read_timeout seconds, as its body must (the app's deadline)."""
    protocol = type("HeadInTime", (HeadInTime,), {"head_timeout": cfg.read_timeout})
    return uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, http=protocol,
                          limit_concurrency=cfg.max_connections, timeout_keep_alive=5)


class HeadInTime(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) with a deadline for each request's line and headers.

    uvicorn times out only a keep-alive connection that sends nothing: one that sends part of a
    request head and then waits, or that never sends a byte, is kept for ever, and enough of them
    take every connection --max-connections allows. Here the clock starts when a connection
    opens and when the first byte of a later request arrives; a head not complete head_timeout
    seconds later closes the connection (with a 408 when some of it came). A connection answered
    before its request's body came in (a route that does not read it) is closed: the rest of that
    body would otherwise keep it open with no clock running.
    """

    head_timeout = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_clock()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._start_clock()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:   # the head is in (or the connection is ending)
            self._stop_clock()
        elif self._deadline is None and not self.transport.is_closing():   # back to IDLE inside h11
            self._start_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.transport.close()     # answered before its body came: nothing bounds the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def _start_clock(self) -> None:
        self._deadline = self.loop.call_later(self.head_timeout, self._too_late)

    def _stop_clock(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_late(self) -> None:
        self._deadline = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:      # part of a head: say why the connection ends
            detail = f'{{"detail": "the request head did not arrive within {self.head_timeout:g} s (--read-timeout)"}}'
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(detail), detail.encode()))
        self.transport.close()


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
