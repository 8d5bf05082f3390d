"""TCP proxies in front of the local Kafka nodes whose path can be cut, one node at a time
(tests and ``streams lab chaos`` only; docs/design.md, "Local stack").

A network partition that separates one worker from one broker (its group coordinator) but not
from the others is what lets a worker go on writing after its group evicted it. Here each node
of a :class:`streams.dev.kafka_cluster.KafkaCluster` started with ``proxied=True`` has a second
listener advertised at a proxy's port, so a client bootstrapped through the proxies
(:meth:`KafkaCluster.bootstrap_for` ``"PROXIED"``) talks to every node through them, while
every other client uses the nodes directly. :meth:`NodeProxy.cut` drops the proxied path to
one node the way a partition does: open connections stop carrying bytes (no reset: the client
finds out from its own timeouts) and new ones are accepted and never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class NodeProxy:
    """Forwards every connection to 127.0.0.1:``port`` on to 127.0.0.1:``upstream`` until
    :meth:`cut`.

    Args:
        port: where to listen.
        upstream: the node listener it forwards to.
    """

    def __init__(self, port: int, upstream: int) -> None:
        self.port = port
        self.upstream = upstream
        self.is_cut = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        """Start listening in a background thread (returns once it listens).

        Raises:
            RuntimeError: it did not listen within 10 s.
        """
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"proxy-{self.port}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the proxy on port {self.port} did not start")

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            return  # accepted, never answered: the client's request times out
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.is_cut:
                    continue  # dropped on the floor, as a partition drops packets
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def cut(self) -> None:
        """Stop carrying bytes to and from the node, on open and new connections alike."""
        self.is_cut = True

    def restore(self) -> None:
        """Carry bytes again (connections opened while cut stay dead; clients reconnect)."""
        self.is_cut = False

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
