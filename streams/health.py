"""Health endpoints of every long-running process, on its metrics port (docs/design.md,
Operations): ``/metrics`` (Prometheus), ``/healthz`` (alive) and ``/readyz`` (ready).

- **Alive**: the process's event loop turns. A probe asks the loop to run a no-op and waits
  up to :data:`LOOP_TIMEOUT_S` for it; a loop blocked by a stuck call (or a deadlock) answers
  503 and the orchestrator restarts the process. Before a process has a loop (imports,
  start-up) it is alive.
- **Ready**: the process does its job now. Each process registers a check that returns None
  when ready or the reason it is not: the fold worker while it joins the group or recovers its
  tables, or stopped at its DLQ limit; a sink before it has partitions or while PostgreSQL
  cannot be reached; the monitor before its first sample or when the broker fails it.

Both answer ``text/plain``: ``ok``/``ready`` with 200, or the reason with 503. The server is a
daemon thread (prometheus-client's threading WSGI server), so it answers while the loop is
busy.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from streams.errors import ConfigError
from streams.settings import variable


class DualStackServer(ThreadingWSGIServer):
    """prometheus-client's threading WSGI server on ``::`` with ``IPV6_V6ONLY`` off: one
    socket answers IPv6 and IPv4 (mapped) clients, so probes and scrapes reach it on
    IPv6-only, IPv4-only and dual-stack clusters alike."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


LOOP_TIMEOUT_S = 5.0
"""How long the event loop may take to run a no-op before ``/healthz`` says it is stuck."""

Readiness = Callable[[], str | None]
"""A process's readiness check: None when ready, else why not (one line)."""


class Health:
    """What ``/healthz`` and ``/readyz`` report for one process."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readiness: Readiness = lambda: "starting"

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """From now on ``/healthz`` checks that ``loop`` turns."""
        self._loop = loop

    def set_readiness(self, check: Readiness) -> None:
        """Use ``check`` for ``/readyz`` (called from the server's thread: it must only read
        state, never block)."""
        self._readiness = check

    def alive(self, timeout_s: float = LOOP_TIMEOUT_S) -> str | None:
        """None when the watched loop ran a no-op within ``timeout_s`` seconds (or no loop is
        watched yet, or it has stopped: the process is exiting), else why not."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return None
        turned = threading.Event()
        try:
            loop.call_soon_threadsafe(turned.set)
        except RuntimeError:  # closed in the meantime: exiting
            return None
        if turned.wait(timeout_s):
            return None
        return f"the event loop did not turn within {timeout_s:g} s"

    def ready(self) -> str | None:
        """None when the process is ready, else why not."""
        try:
            return self._readiness()
        except Exception as exc:  # a check must not take the endpoint down
            return f"readiness check failed: {exc!r}"


def _app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            reason = health.alive() if path == "/healthz" else health.ready()
            ok = "ok" if path == "/healthz" else "ready"
            status = "200 OK" if reason is None else "503 Service Unavailable"
            body = f"{reason or ok}\n".encode()
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                    ("Content-Length", str(len(body)))])
            return [body]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Probes every few seconds would flood the log."""


def serve(port: int, registry: CollectorRegistry, health: Health) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` of every interface, IPv6
    and IPv4 (:class:`DualStackServer`; IPv4 alone on a host without IPv6), from a daemon
    thread; 0 = do not serve.

    Raises:
        ConfigError: the port is taken (or not allowed), in one line naming
            ``XP_METRICS_PORT``.
    """
    if not port:
        return
    try:
        try:
            server: ThreadingWSGIServer = make_server(
                "::", port, _app(registry, health), DualStackServer, handler_class=_Quiet)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            server = make_server("0.0.0.0", port, _app(registry, health),  # noqa: S104
                                 ThreadingWSGIServer, handler_class=_Quiet)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on port {port} "
                          f"({variable('metrics_port').name}): {exc.strerror or exc}; give "
                          "each process on this host its own port, or 0 for none") from None
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
