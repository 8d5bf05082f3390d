"""Apache Kafka 4.4 in KRaft mode for the local stack: one combined node, or three.

What operators run: logs on disk (a restarted broker keeps what it acknowledged), replication,
ListOffsets by timestamp, retention and DeleteRecords, the idempotent producer and transactions
(the worker's checkpoint needs them). The jars come from Maven Central once per machine
(:func:`ensure_jars`, Maven and a Java 17 runtime from Debian); each node is a ``java`` child
process with its own properties file, log directory and log file under the stack's folder
(docs/design.md, "Local stack").

Each node is broker and controller at once (``process.roles=broker,controller``) with static
quorum voters, so the same files serve one node and three. Three nodes replicate every topic
three times with ``min.insync.replicas=2``: one node can be killed without losing an
acknowledged record or the quorum.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient, CoordinationType

from streams.dev.netcut import NodeProxy
from streams.dev.procs import free_port, stop_process, wait_for_port
from streams.errors import StreamsError
from streams.settings import KAFKA_JARS

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).with_name("kafka") / "pom.xml"
READY_TIMEOUT_S = 90.0
"""Seconds a node may take from ``java`` starting to serving clients (about 5 s here)."""

_LOG4J2 = """\
Configuration:
  name: xp-streams-kafka
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDERR
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.Kafka
        level: INFO
"""


class KafkaUnavailable(StreamsError):
    """Java or Maven is missing, the jars could not be fetched, or a node did not start (the
    message is one line; a node's ends with the last lines of its log)."""


def log_tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of the log at ``path`` that say something (Java stack frames
    left out), joined with `` | ``."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    said = [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith(("at ", "... "))]
    return " | ".join(said[-lines:])


def jars_dir() -> Path:
    """Where the broker's jars are kept: ``XP_KAFKA_JARS`` if set, else ``build/kafka-4.4.0``
    in the source checkout this package runs from, else ``~/.cache/xp-streams/kafka-4.4.0``."""
    if env := KAFKA_JARS.read():
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "build" / f"kafka-{KAFKA_VERSION}"
    return Path.home() / ".cache" / "xp-streams" / f"kafka-{KAFKA_VERSION}"


def ensure_jars(say: object = None) -> Path:
    """Fetch the broker's runtime jars with Maven unless they are there; return their folder.

    Raises:
        KafkaUnavailable: ``java`` or ``mvn`` is not installed, or Maven failed (its last lines
            in the message).
    """
    target = jars_dir()
    stamp = target / ".complete"
    if stamp.is_file():
        return target
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise KafkaUnavailable(f"{tool} not found: install Debian's default-jre-headless and "
                                   "maven (make system-deps does) to run Apache Kafka locally")
    if callable(say):
        say(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {target} ...")
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={target}"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise KafkaUnavailable(f"Maven could not fetch the Kafka jars: {tail}")
    if not (target / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        raise KafkaUnavailable(f"Maven finished but {target} has no kafka_2.13 jar")
    stamp.write_text(KAFKA_VERSION + "\n")
    return target


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding or ``-``."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if "-" not in value:
            return value


@dataclass(frozen=True)
class KafkaSecurity:
    """Authenticated listeners for a local cluster, beside its PLAINTEXT one.

    ``SASL_SSL`` (SCRAM-SHA-256 and SCRAM-SHA-512 over TLS) and ``SSL`` (mutual TLS: a client
    certificate signed by ``cafile`` is required). Both serve ``keystore``: one PEM file with
    the broker's PKCS#8 private key (``BEGIN PRIVATE KEY``) and its certificate chain, the
    certificate naming ``IP:127.0.0.1`` and ``DNS:localhost``.

    Args:
        users: SCRAM users created when the storage is formatted, as (mechanism, name,
            password) with mechanism ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` (no comma in a
            password: the format tool's syntax).
        keystore: the broker's key and certificate chain (PEM).
        cafile: the CA that signs client certificates (PEM).
    """

    users: tuple[tuple[str, str, str], ...]
    keystore: Path
    cafile: Path


class KafkaNode:
    """One combined broker + controller node: its ports, files and process."""

    def __init__(self, node_id: int, base_dir: Path) -> None:
        self.node_id = node_id
        self.port = free_port()
        self.sasl_ssl_port = free_port()
        """Port of the SASL_SSL listener (with :class:`KafkaSecurity`)."""
        self.ssl_port = free_port()
        """Port of the SSL (mutual TLS) listener (with :class:`KafkaSecurity`)."""
        self.controller_port = free_port()
        self.proxy: NodeProxy | None = None
        """The cuttable proxy of its PROXIED listener (a cluster started with ``proxied``)."""
        self.dir = base_dir / f"kafka-{node_id}"
        self.properties = self.dir / "server.properties"
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:port`` of its client listener."""
        return f"127.0.0.1:{self.port}"


class KafkaCluster:
    """A local Apache Kafka cluster of ``nodes`` (1 or 3) combined KRaft nodes on 127.0.0.1.

    Args:
        base_dir: folder for each node's properties, log dir (``kafka-<id>/data``) and log.
        nodes: 1 (replication factor 1) or 3 (replication factor 3, ``min.insync.replicas`` 2).
        heap_mb: maximum Java heap of each node (MiB).
        security: also serve SASL_SSL and SSL listeners (:class:`KafkaSecurity`).
        proxied: also serve a PROXIED listener per node, advertised at a
            :class:`streams.dev.netcut.NodeProxy` whose path :meth:`cut` drops (a network
            partition between the clients bootstrapped through it and one node).

    Raises:
        ValueError: ``nodes`` is not 1 or 3, or both ``security`` and ``proxied``.
    """

    def __init__(self, base_dir: Path, nodes: int = 1, heap_mb: int = 512,
                 security: KafkaSecurity | None = None, proxied: bool = False) -> None:
        if nodes not in (1, 3):
            raise ValueError(f"a local Kafka cluster has 1 or 3 nodes, not {nodes}")
        if security is not None and proxied:
            raise ValueError("a local Kafka cluster is either secured or proxied")
        self.base_dir = base_dir
        self.heap_mb = heap_mb
        self.security = security
        self.nodes = [KafkaNode(i, base_dir) for i in range(1, nodes + 1)]
        if proxied:
            for node in self.nodes:
                node.proxy = NodeProxy(free_port(), free_port())
        self.jars: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client listener, comma-separated."""
        return ",".join(n.address for n in self.nodes)

    def bootstrap_for(self, protocol: str) -> str:
        """Every node's listener for ``protocol`` (``PLAINTEXT``, ``SASL_SSL``, ``SSL``)."""
        if protocol == "PROXIED":
            return ",".join(f"127.0.0.1:{n.proxy.port}" for n in self.nodes if n.proxy)
        port = {"PLAINTEXT": "port", "SASL_SSL": "sasl_ssl_port", "SSL": "ssl_port"}[protocol]
        return ",".join(f"127.0.0.1:{getattr(n, port)}" for n in self.nodes)

    def cut(self, node_id: int) -> None:
        """Drop the PROXIED path to node ``node_id`` (open and new connections alike); clients
        that use the nodes directly are not affected."""
        proxy = self.nodes[node_id - 1].proxy
        assert proxy is not None, "the cluster was not started with proxied=True"
        proxy.cut()

    def restore(self, node_id: int) -> None:
        """Carry the PROXIED path to node ``node_id`` again."""
        proxy = self.nodes[node_id - 1].proxy
        assert proxy is not None, "the cluster was not started with proxied=True"
        proxy.restore()

    async def coordinator(self, group: str) -> int:
        """The node id of ``group``'s group coordinator (FindCoordinator, asked directly)."""
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers)
        await client.bootstrap()
        try:
            node: int = await client.coordinator_lookup(CoordinationType.GROUP, group)
            return node
        finally:
            await client.close()

    def _write_files(self, node: KafkaNode, cluster: str) -> None:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas = len(self.nodes)
        min_isr = 2 if replicas == 3 else 1
        props = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
                         f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": node.dir / "data",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            # Sized for a 2-core machine (each node shares it with the pipeline).
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.num.partitions": 1,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
            "replica.lag.time.max.ms": 10_000,
            "auto.create.topics.enable": "false",
        }
        scram: list[str] = []
        if node.proxy is not None:
            props.update({
                "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
                             f"PROXIED://127.0.0.1:{node.proxy.upstream},"
                             f"CONTROLLER://127.0.0.1:{node.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
                                        f"PROXIED://127.0.0.1:{node.proxy.port}",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                                                  "PROXIED:PLAINTEXT",
            })
        if self.security is not None:
            props.update(self._security_props(node))
            for mechanism, name, password in self.security.users:
                scram += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        node.dir.mkdir(parents=True, exist_ok=True)
        node.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.base_dir / "log4j2.yaml").write_text(_LOG4J2)
        self._java(["kafka.tools.StorageTool", "format", "-t", cluster, "-c",
                    str(node.properties), "--ignore-formatted", *scram], heap_mb=256)

    def _security_props(self, node: KafkaNode) -> dict[str, object]:
        """The SASL_SSL and SSL listeners' properties (Kafka's broker configuration docs)."""
        assert self.security is not None
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
                         f"SASL_SSL://127.0.0.1:{node.sasl_ssl_port},"
                         f"SSL://127.0.0.1:{node.ssl_port},"
                         f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
                                    f"SASL_SSL://127.0.0.1:{node.sasl_ssl_port},"
                                    f"SSL://127.0.0.1:{node.ssl_port}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                                              "SSL:SSL,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": jaas,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": self.security.keystore,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.security.cafile,
            "listener.name.ssl.ssl.client.auth": "required",
        }

    def _command(self, main: list[str], heap_mb: int) -> list[str]:
        assert self.jars is not None
        return ["java", f"-Xmx{heap_mb}m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.base_dir / 'log4j2.yaml'}",
                "-cp", f"{self.jars}/*", *main]

    def _java(self, main: list[str], heap_mb: int) -> None:
        proc = subprocess.run(self._command(main, heap_mb), capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise KafkaUnavailable(f"kafka {main[0]} failed: {tail}")

    def start(self, detach: bool = False) -> None:
        """Fetch the jars if needed, format every node's storage once, start every node and
        wait until the cluster serves metadata with all its brokers.

        Args:
            detach: start the nodes in their own sessions so they outlive this process.

        Raises:
            KafkaUnavailable: no Java/Maven, a failed format, or a node exited.
            TimeoutError: not ready after :data:`READY_TIMEOUT_S` seconds.
        """
        self.jars = ensure_jars()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cluster = cluster_id()
        for node in self.nodes:
            self._write_files(node, cluster)
        self._detach = detach
        for node in self.nodes:
            if node.proxy is not None:
                node.proxy.start()
        for node in self.nodes:  # all at once: a node serves clients only once it has a quorum
            self._launch(node)
        for node in self.nodes:
            self._wait_listening(node)
        self.wait_ready()

    def _launch(self, node: KafkaNode) -> None:
        log = node.log_path.open("ab")
        node.proc = subprocess.Popen(
            self._command(["kafka.Kafka", str(node.properties)], self.heap_mb),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=getattr(self, "_detach", False),
        )
        log.close()

    def _wait_listening(self, node: KafkaNode) -> None:
        try:
            wait_for_port(node.port, READY_TIMEOUT_S, node.proc)
        except RuntimeError as exc:
            raise KafkaUnavailable(f"Kafka node {node.node_id} exited ({node.log_path}): "
                                   f"{log_tail(node.log_path)}") from exc

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll the cluster's metadata with a client until it lists every node.

        Raises:
            TimeoutError: not every broker registered after ``timeout_s`` seconds.
        """
        async def brokers() -> int:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                        request_timeout_ms=5000)
            try:
                await admin.start()
                cluster = await admin.describe_cluster()
                return len(cluster["brokers"])
            finally:
                await admin.close()

        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise KafkaUnavailable(
                        f"Kafka node {node.node_id} exited with {node.proc.returncode} "
                        f"({node.log_path}): {log_tail(node.log_path)}")
            try:
                if asyncio.run(brokers()) >= len(self.nodes):
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet: poll again until the deadline
                last = exc
            time.sleep(0.2)
        tails = "; ".join(f"node {n.node_id}: {log_tail(n.log_path, 3)}" for n in self.nodes)
        raise TimeoutError(f"Kafka at {self.bootstrap_servers} not ready after {timeout_s} s "
                           f"({last}); {tails}")

    def pids(self) -> list[int]:
        """Process ids of the running nodes."""
        return [n.proc.pid for n in self.nodes if n.proc is not None]

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (a crash: no clean shutdown, its log dir stays)."""
        node = self.nodes[node_id - 1]
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait()
            node.proc = None

    def restart(self, node_id: int) -> None:
        """Start node ``node_id`` again on its existing log dir and wait for the cluster."""
        node = self.nodes[node_id - 1]
        self._launch(node)
        self._wait_listening(node)
        self.wait_ready()

    def restart_all(self) -> None:
        """Start every stopped node again on its log dir (all at once: each waits for a
        quorum) and wait for the cluster."""
        stopped = [n for n in self.nodes if n.proc is None]
        for node in stopped:
            self._launch(node)
        for node in stopped:
            self._wait_listening(node)
        self.wait_ready()

    def stop(self) -> None:
        """Stop every node: SIGTERM to all at once (one by one, the last nodes would wait for a
        quorum that is gone), then SIGKILL whatever still runs after 30 s."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                stop_process(node.proc, 30)
                node.proc = None
        for node in self.nodes:
            if node.proxy is not None:
                node.proxy.stop()
