"""The local stack: a broker + PostgreSQL + migrations + topics, and the pipeline's processes.

Used by ``streams dev up``/``down``, ``streams lab demo``, ``bench``, ``chaos`` and the integration
tests. Nothing here runs in production: there the broker and database come from settings.

The broker is chosen by ``XP_LOCAL_BROKER`` (:func:`local_broker_kind`): ``kafka`` (default:
Apache Kafka 4.4, one KRaft node) or ``kafka-3`` (three nodes, replication factor 3). Both run
the worker's transactions (docs/design.md, "Local stack").
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streams import kafka
from streams.db.migrate import migrate
from streams.dev.kafka_cluster import KafkaCluster
from streams.dev.postgres import PostgresCluster
from streams.dev.procs import stop_process
from streams.settings import LOCAL_BROKER, Settings, to_env

DATABASE = "xp_streams"
BROKER_KINDS = ("kafka", "kafka-3")


def local_broker_kind(value: str | None = None) -> str:
    """The local stack's broker: ``value``, else ``XP_LOCAL_BROKER``, else ``kafka``.

    Raises:
        ValueError: not one of :data:`BROKER_KINDS`.
    """
    kind = (value or LOCAL_BROKER.read() or LOCAL_BROKER.default).strip().lower()
    if kind not in BROKER_KINDS:
        raise ValueError(f"{LOCAL_BROKER.name}={kind!r}: expected one of "
                         f"{', '.join(BROKER_KINDS)}")
    return kind


class LocalBroker(Protocol):
    """What the local stack needs of a broker (:class:`KafkaCluster`)."""

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` for clients."""

    def start(self, detach: bool = False) -> None:
        """Start it and wait until clients can use it."""

    def stop(self) -> None:
        """Stop it."""

    def pids(self) -> list[int]:
        """Process ids of its running processes."""


def new_broker(kind: str, base_dir: Path) -> LocalBroker:
    """A broker of ``kind`` (:data:`BROKER_KINDS`) keeping its files under ``base_dir``."""
    if kind == "kafka-3":  # proxied: chaos's coordinator-cut needs a path it can cut
        return KafkaCluster(base_dir, nodes=3, proxied=True)
    return KafkaCluster(base_dir, nodes=1)


def default_base_dir() -> Path:
    """A fresh directory under the system temp dir (reachable by the ``postgres`` user)."""
    path = Path(tempfile.mkdtemp(prefix="xp-streams-"))
    path.chmod(0o755)
    return path


@dataclass
class LocalStack:
    """A running broker and PostgreSQL cluster with the schema applied."""

    base_dir: Path
    broker: LocalBroker | None = None
    postgres: PostgresCluster | None = None
    settings: Settings = field(default_factory=Settings)
    broker_kind: str = field(default_factory=local_broker_kind)
    """``kafka`` or ``kafka-3`` (default: ``XP_LOCAL_BROKER``)."""

    def start(self, detach: bool = False) -> Settings:
        """Start both servers, create the database, migrate, and return :attr:`settings`
        pointed at them: their addresses, a plaintext listener, a data directory under
        :attr:`base_dir`, replication factor 3 on ``kafka-3``; every other setting (the
        pipeline's tuning) as given."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.broker = new_broker(self.broker_kind, self.base_dir)
        self.broker.start(detach=detach)
        self.postgres = PostgresCluster(self.base_dir / "pg")
        self.postgres.init()
        self.postgres.start()
        url = self.postgres.create_database(DATABASE)
        migrate(url)
        self.settings = self.settings.with_(
            kafka_bootstrap_servers=self.broker.bootstrap_servers,
            kafka_security_protocol="PLAINTEXT", kafka_sasl_mechanism=None,
            kafka_sasl_username=None, kafka_sasl_password=None, kafka_ssl_cafile=None,
            kafka_ssl_certfile=None, kafka_ssl_keyfile=None,
            database_url=url,
            data_dir=str(self.base_dir / "worker"),
            topic_replication_factor=3 if self.broker_kind == "kafka-3" else 1,
        )
        return self.settings

    def create_topics(self, settings: Settings | None = None) -> None:
        """Create the pipeline's topics (:func:`streams.kafka.pipeline_topics`)."""
        asyncio.run(kafka.pipeline_topics(settings or self.settings))

    def stop(self, remove: bool = True) -> None:
        """Stop both servers; remove the base directory unless ``remove`` is False."""
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if remove:
            shutil.rmtree(self.base_dir, ignore_errors=True)


class PipelineProcess:
    """One pipeline process (``streams worker|sink|totals-writer``) run as a child."""

    def __init__(self, command: str, settings: Settings, log_path: Path,
                 metrics_port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.command = command
        self.args = args
        self.settings = settings
        self.log_path = log_path
        self.metrics_port = settings.metrics_port if metrics_port is None else metrics_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it with the environment of :attr:`settings`; output goes to :attr:`log_path`."""
        env = {**os.environ, **to_env(self.settings.with_(metrics_port=self.metrics_port)),
               "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", self.command, *self.args], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        """kill -9, no goodbye (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait for a graceful exit (then SIGKILL). Returns the exit code."""
        if self.proc is None:
            return None
        return stop_process(self.proc, timeout_s)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> list[Sample]:
        """Every sample on its ``/metrics`` now (name, labels, value), read with
        prometheus_client's text parser.

        Raises:
            OSError: the endpoint did not answer within 5 s.
        """
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local child
            text = response.read().decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def ready(self) -> bool:
        """True when its ``/readyz`` answers 200 (a worker: it reads the partitions of the
        group's current assignment; docs/design.md, "Operations")."""
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a local child
                return bool(response.status == 200)
        except OSError:  # refused while starting; HTTPError 503 while not ready
            return False
