"""A TLS-terminating TCP proxy in front of a plaintext Kafka-protocol broker (tests only).

The bundled Tansu cannot serve TLS (its ``--cert`` and ``--key`` flags refuse to be given
together, and ``--cert`` alone leaves the listener plaintext), so the TLS settings are tested
through this proxy: clients speak real TLS (optionally mutual TLS) to it and it forwards the
bytes to the broker, which advertises the proxy's address. What is checked for real is the
client side: the pipeline's certificates, CA verification and client certificates, through
aiokafka and faust-streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from pathlib import Path

from streams.dev.procs import free_port


class TlsProxy:
    """Listens with TLS on 127.0.0.1:``port`` and forwards every connection to ``upstream``.

    Args:
        upstream: (host, port) of the plaintext broker.
        certfile, keyfile: the proxy's certificate and key (PEM), as a broker's.
        client_cafile: when given, clients must present a certificate signed by this CA
            (mutual TLS).
        port: where to listen (None: a free port).
    """

    def __init__(self, upstream: tuple[str, int], certfile: Path, keyfile: Path,
                 client_cafile: Path | None = None, port: int | None = None) -> None:
        self.upstream = upstream
        self.port = port or free_port()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certfile, keyfile)
        if client_cafile is not None:
            self.context.load_verify_locations(client_cafile)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        """Start listening in a background thread (returns once it listens)."""
        self._thread = threading.Thread(target=self._run, name="tls-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the TLS proxy did not start")

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self.context))
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                writer.close()

    def stop(self) -> None:
        """Stop listening and end the thread (open connections are dropped)."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        def close() -> None:
            server.close()
            loop.stop()
        loop.call_soon_threadsafe(close)
        if self._thread is not None:
            self._thread.join(10)
