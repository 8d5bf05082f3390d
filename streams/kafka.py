"""Kafka clients built from settings, topic creation, and watermark / committed-offset reads.

Every aiokafka client of the project is made here so TLS/SASL settings apply everywhere. The
same code runs against Apache Kafka, Redpanda or MSK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord, TopicPartition
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from streams import topology
from streams.errors import BrokerUnavailable, ConfigError
from streams.settings import Settings, variable

T = TypeVar("T")


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client: servers, TLS and SASL. With TLS it
    reads the CA, certificate and key files (``KAFKA_SSL_*``).

    Raises:
        ConfigError: a TLS file does not exist or cannot be read.
        ssl.SSLError: a TLS file is not PEM.
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in {"SSL", "SASL_SSL"}:
        for field in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            name, path = variable(field).name, getattr(settings, field)
            if path and not os.access(path, os.R_OK):
                raise ConfigError(f"{name} {path}: "
                                  f"{'cannot be read' if os.path.exists(path) else 'no such file'}")
        kwargs["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile)
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password
    return kwargs



@contextlib.contextmanager
def connect_failures() -> Iterator[list[str]]:
    """Collect, while the block runs, why aiokafka could not connect to a broker.

    aiokafka logs each bootstrap server's failure (a refused login: ``Authentication failed
    ... invalid credentials``; an untrusted CA: ``certificate verify failed``) and then raises
    only ``Unable to bootstrap from [...]``. The yielded list receives those reasons, in
    order, so an error can name the real one. The records are not printed.
    """
    reasons: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if (isinstance(record.msg, str) and record.msg.startswith("Unable")
                    and isinstance(record.args, tuple) and record.args):
                reasons.append(" ".join(str(record.args[-1]).split()))

    logger = logging.getLogger("aiokafka")
    handler = _Collect(logging.WARNING)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield reasons
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


DLQ_MAX_VALUE_BYTES = 1_000_000
"""A DLQ record keeps at most this many bytes of its source record's value: with its key and
headers it stays under the producer's and the broker's default limit of 1 MiB (a source record
a few hundred bytes under the limit, dead-lettered whole with its headers, could not be
produced: the partition halted). Smaller values are kept whole, so an oversized record can be
replayed once ``XP_MAX_RECORD_BYTES`` is raised."""

DLQ_MAX_KEY_BYTES = 1024
"""A DLQ record keeps at most this many bytes of its source record's key (keys are 36-byte
ids)."""


def _cut(data: bytes | None, limit: int, name: str,
         headers: list[tuple[str, bytes]]) -> bytes | None:
    """``data`` cut to ``limit`` bytes; when cut, ``headers`` get ``{name}_cut_from`` with the
    original length (bytes)."""
    if data is None or len(data) <= limit:
        return data
    headers.append((f"{name}_cut_from", str(len(data)).encode()))
    return data[:limit]


def dead_letter(record: ConsumerRecord[bytes, bytes], reason: str, detail: str,
                *extra: tuple[str, bytes]) -> tuple[bytes | None, bytes | None,
                                                    list[tuple[str, bytes]]]:
    """A DLQ record of ``record``: (key, value, headers) with its original key and bytes and
    the headers ``reason``, ``detail`` (at most 500 characters), ``source_topic``,
    ``source_partition``, ``source_offset`` and ``extra`` (docs/design.md, "Contracts"). A
    value longer than :data:`DLQ_MAX_VALUE_BYTES` or a key longer than
    :data:`DLQ_MAX_KEY_BYTES` is cut, and a ``value_cut_from`` / ``key_cut_from`` header gives
    its length (a record cut so is not replayable: ``XP_MAX_RECORD_BYTES`` refuses it anyway).
    """
    headers = [
        ("reason", reason.encode()),
        ("detail", detail[:500].encode("utf-8", "replace")),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
        *extra,
    ]
    key = _cut(record.key, DLQ_MAX_KEY_BYTES, "key", headers)
    value = _cut(record.value, DLQ_MAX_VALUE_BYTES, "value", headers)
    return key, value, headers


async def start(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """``client.start()``, then one turn of the event loop so that a consumer's background
    fetch task starts (aiokafka's ``stop()`` awaits it and raises ``CancelledError`` when it was
    cancelled before it ever ran: a client closed at once). When the start fails (no broker
    answered), the client is stopped before the error propagates: nothing is left unclosed.

    Raises:
        KafkaError: what ``start()`` raised (``KafkaConnectionError``: no broker answered).
    """
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    await asyncio.sleep(0)


def producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """An unstarted producer: acks=all, orjson bytes in and out, linger and idempotence from
    settings.

    The idempotent producer is on unless ``XP_PRODUCER_IDEMPOTENCE=0``; duplicates from
    producer retries are dropped by event id downstream either way.
    """
    kwargs: dict[str, object] = {
        **client_kwargs(settings),
        "acks": "all",
        "linger_ms": settings.producer_linger_ms,
        "enable_idempotence": settings.producer_idempotence,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


async def transactional_producer(settings: Settings, transactional_id: str,
                                 transaction_timeout_ms: int) -> AIOKafkaProducer:
    """A started transactional producer (acks=all, idempotent, no linger) whose transactions
    are initialised: the broker has bumped ``transactional_id``'s epoch, so every other
    producer with that id is fenced (its next send or commit fails with ``ProducerFenced``)
    and a transaction it left open is aborted. aiokafka's ``start()`` returns before its
    InitProducerId has completed; this waits for it. A broker that does not answer (restarting)
    is tried again for up to ``settings.broker_wait_seconds``, as at start-up.

    Raises:
        KafkaError: the broker refused (no transactions, an ACL on the id) or stayed away.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.broker_wait_seconds
    while True:
        client = producer(settings, linger_ms=0, enable_idempotence=True,
                          transactional_id=transactional_id,
                          transaction_timeout_ms=transaction_timeout_ms)
        try:
            await client.start()
            break
        except KafkaConnectionError:
            await client.stop()
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        await client._txn_manager.wait_for_pid()  # noqa: SLF001 - no public API for it
    except BaseException:
        await client.stop()
        raise
    return client


def consumer(settings: Settings, group_id: str | None, **overrides: object) -> AIOKafkaConsumer:
    """An unstarted consumer with manual commits, reading from the earliest offset, committed
    records only (``read_committed``): the worker writes its changelogs and outputs (awards to
    the XP topic, claim outcomes) in Kafka transactions, and a record of an aborted or still
    open transaction must never be read (docs/design.md, "Fold worker: checkpoints"). Its
    ``end_offsets`` are then last stable offsets, and its positions step over transaction
    markers."""
    kwargs: dict[str, object] = {
        **client_kwargs(settings),
        "group_id": group_id,
        "isolation_level": "read_committed",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": int(settings.broker_session_timeout * 1000),
        "heartbeat_interval_ms": max(100, int(settings.broker_session_timeout * 1000 / 5)),
        "rebalance_timeout_ms": int(settings.broker_rebalance_timeout * 1000),
        "max_poll_interval_ms": 600_000,
        "fetch_max_bytes": 16 * 1024 * 1024,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(**kwargs)


GATHER_MIN_BYTES = 1024 * 1024
"""Bytes of records at which the broker answers the worker's gathering fetch before its wait
is up: a backlog is never held back, a steady stream is (:func:`gathering_fetch`)."""


def gathering_fetch(settings: Settings) -> dict[str, int]:
    """Fetch settings of the worker's batch reader: the broker holds each fetch for
    ``settings.worker_fetch_wait_ms`` or until :data:`GATHER_MIN_BYTES` are ready, so under
    steady traffic the reader gets one larger batch per wait instead of a small one per
    round trip, and the worker pays for fewer checkpoints (docs/design.md, "Fold worker:
    checkpoints"). With a wait of 0: answer at one record, idle fetches wait
    ``settings.fetch_max_wait_ms``. Returns ``fetch_max_wait_ms`` (milliseconds) and
    ``fetch_min_bytes`` (bytes) for :func:`consumer`."""
    if settings.worker_fetch_wait_ms <= 0:
        return {"fetch_max_wait_ms": settings.fetch_max_wait_ms, "fetch_min_bytes": 1}
    return {"fetch_max_wait_ms": settings.worker_fetch_wait_ms,
            "fetch_min_bytes": GATHER_MIN_BYTES}


def let_go(consumer: AIOKafkaConsumer) -> None:
    """Stop ``consumer`` fetching every partition assigned to it, without unassigning them:
    they are paused, and the next ``assign()`` replaces them with fresh, unpaused ones.

    Not ``assign([])``: aiokafka's fetcher lets go of the old assignment by cancelling its
    fetches in flight and awaiting each under ``contextlib.suppress(CancelledError)``; a
    ``consumer.stop()`` that cancels it just then has its cancellation swallowed, the fetcher
    goes on for ever and ``stop()`` never returns (a worker that hung on SIGTERM;
    ``tests/integration/test_broker_quirks.py`` checks that a consumer let go of closes)."""
    consumer.pause(*consumer.assignment())


async def ensure_topics(
    settings: Settings, names: Iterable[str], partitions: int,
    configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create the topics ``names`` with ``partitions`` partitions when they do not exist.

    Args:
        configs: per-topic configs, e.g. ``{"x-changelog": {"cleanup.policy": "compact"}}``.
    """
    async def create(admin: AIOKafkaAdminClient) -> None:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics([
                    NewTopic(n, num_partitions=partitions,
                             replication_factor=settings.topic_replication_factor,
                             topic_configs=(configs or {}).get(n, {}))
                    for n in missing
                ])
            except TopicAlreadyExistsError:
                pass

    await with_admin(settings, create)


REFUSALS = ("Authentication failed", "certificate verify failed", "SaslAuthentication",
            "UnsupportedSaslMechanism")
"""Connect failure reasons that waiting does not cure (a refused login, an untrusted CA)."""


async def wait_for_brokers(settings: Settings, log: logging.Logger,
                           stop: asyncio.Event | None = None) -> bool:
    """Wait until a bootstrap server answers a metadata request, for at most
    ``settings.broker_wait_seconds``: a worker or sink started before its broker (a restart of
    the whole stack, a broker restarting) then starts by itself instead of crashing.

    Each failed attempt is logged at WARNING with the broker's reason; attempts back off from
    0.5 s to 5 s. Returns True once a broker answered, False when ``stop`` was set first.

    Raises:
        BrokerUnavailable: no broker answered in time, or one refused the login or the
            certificate (:data:`REFUSALS`, not retried); the message is one line naming the
            servers and the reason.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.broker_wait_seconds
    delay = 0.5
    while True:
        with connect_failures() as reasons:
            client = AIOKafkaClient(**client_kwargs(settings))
            try:
                await client.bootstrap()
                return True
            except KafkaError as exc:
                reason = reasons[-1] if reasons else str(exc)
            finally:
                await client.close()
        where = settings.kafka_bootstrap_servers
        left = deadline - loop.time()
        if any(r in reason for r in REFUSALS) or left <= 0:
            raise BrokerUnavailable(f"cannot reach the brokers {where}: {reason}")
        log.warning("no broker answered at %s (%s); retrying for %.0f s more", where, reason,
                    left)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for((stop or asyncio.Event()).wait(), min(delay, left))
        if stop is not None and stop.is_set():
            return False
        delay = min(delay * 2, 5.0)


ADMIN_NODE_DOWN_RETRY_S = 60.0
"""How long an admin request is retried while the node it was sent to is down (seconds)."""


class NodeLost(KafkaConnectionError):  # type: ignore[misc]
    """The connection to a node closed under an admin request (the node died after the client
    had bootstrapped): retried by :func:`with_admin` like a node not ready."""


async def with_admin(settings: Settings,
                     op: Callable[[AIOKafkaAdminClient], Awaitable[T]]) -> T:
    """Run ``op`` with a started admin client, closed after.

    The admin client sends each request to one node of its metadata (a random one, or the one
    named controller). A node that is down but still listed (a broker killed on a 3-node
    cluster stays in the metadata until the controller fences it, about 9 s) fails the request
    with ``NodeNotReadyError``, and one killed under the request closes its connection
    (:class:`NodeLost`); the request is then retried on a new client, with backoff, for up to
    :data:`ADMIN_NODE_DOWN_RETRY_S`. Unreachable bootstrap servers are not retried: they fail
    at once (``KafkaConnectionError``).
    """
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((NodeNotReadyError, RequestTimedOutError, NodeLost)),
        wait=wait_exponential_jitter(initial=0.2, max=2.0),
        stop=stop_after_delay(ADMIN_NODE_DOWN_RETRY_S), reraise=True,
    ):
        with attempt:
            admin = AIOKafkaAdminClient(**client_kwargs(settings))
            await admin.start()
            try:
                return await op(admin)
            except NodeLost:
                raise
            except KafkaConnectionError as exc:  # bootstrapped, so a node went away under it
                raise NodeLost(str(exc)) from exc
            finally:
                await admin.close()
    raise AssertionError("unreachable: AsyncRetrying reraises")  # pragma: no cover


async def create_missing(settings: Settings, specs: Iterable[topology.TopicSpec]) -> None:
    """Create the topics of ``specs`` that do not exist (with
    ``settings.topic_replication_factor`` replicas); existing topics are left as they are."""
    groups: dict[int, list[topology.TopicSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.partitions, []).append(spec)
    for partitions, group in groups.items():
        await ensure_topics(settings, [g.name for g in group], partitions,
                            {g.name: dict(g.configs) for g in group if g.configs})


async def changelog_topics(settings: Settings) -> None:
    """Create the worker's table changelogs (:func:`streams.topology.changelog_specs`) when
    they do not exist. The worker calls it before Faust starts: Faust itself declares no topic
    (docs/design.md, "Local stack"), because its declaration asks the node the metadata names
    as controller and crashes the worker when that node is down."""
    await create_missing(settings, topology.changelog_specs(settings))


async def pipeline_topics(settings: Settings) -> None:
    """Create every topic of the pipeline (:func:`streams.topology.topic_specs`) that does
    not exist. Creating the changelogs here, not on first use, keeps a consumer that reads one
    before the worker writes it from having the broker auto-create it with the wrong
    partition count."""
    await create_missing(settings, topology.topic_specs(settings))


async def grant_topics(settings: Settings) -> None:
    """Create the grant stream's topics (:func:`streams.topology.grant_specs`) when they do
    not exist. The worker calls it before it starts, as it does for its changelogs: its reader
    is assigned every source topic of the topology."""
    await create_missing(settings, topology.grant_specs(settings))


async def topic_exists(settings: Settings, topic: str) -> bool:
    """True when ``topic`` exists (asked through the admin API, which never auto-creates)."""

    async def exists(admin: AIOKafkaAdminClient) -> bool:
        return topic in set(await admin.list_topics())

    return await with_admin(settings, exists)


async def partitions_for(
    client: AIOKafkaConsumer, topic: str, timeout_s: float = 2.0
) -> list[int]:
    """Return the partition numbers of ``topic``.

    Asks for the whole cluster's metadata (which never auto-creates a topic), retrying for up
    to ``timeout_s`` seconds for a topic created a moment ago.

    Raises:
        LookupError: the topic does not exist.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        parts = client.partitions_for_topic(topic)
        if not parts:
            metadata = await client._client.fetch_all_metadata()  # noqa: SLF001 - no public API
            parts = metadata.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if loop.time() > deadline:
            raise LookupError(f"topic {topic!r} does not exist")
        await asyncio.sleep(0.2)


class OffsetReader:
    """Reads high watermarks, groups' committed offsets and record timestamps from the broker.

    It never joins a consumer group, so what it reports stays right while a group rebalances or
    its consumers are down. Use as ``async with OffsetReader(settings) as reader``; its clients
    live as long as it does.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # fetch_max_wait_ms: an empty fetch (at the end of a partition) must answer at once.
        self._reader = consumer(settings, None, max_partition_fetch_bytes=64 * 1024,
                                fetch_max_wait_ms=10)
        self._groups: dict[str, AIOKafkaConsumer] = {}

    async def __aenter__(self) -> OffsetReader:
        await start(self._reader)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._groups.values():
            await client.stop()
        await self._reader.stop()

    async def partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``. Raises ``LookupError`` when it does not exist."""
        return await partitions_for(self._reader, topic)

    async def _fetch_from(self, positions: dict[TopicPartition, int], need_record: bool,
                          timeout_s: float = 2.0) -> dict[
            TopicPartition, tuple[int | None, ConsumerRecord[bytes, bytes] | None]]:
        """Fetch from each position until its last stable offset is known (and, with
        ``need_record``, its first record, unless the position is at the end); at most
        ``timeout_s`` seconds. Returns (last stable offset, first record or None) per
        partition that answered in time."""
        self._reader.assign(list(positions))
        for tp, offset in positions.items():
            self._reader.seek(tp, offset)
        found: dict[TopicPartition, tuple[int | None, ConsumerRecord[bytes, bytes] | None]] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(found) < len(positions) and loop.time() < deadline:
            batch = await self._reader.getmany(*positions, timeout_ms=200)
            for tp in positions:
                if tp in found:
                    continue
                records = batch.get(tp)
                hw = self._reader.last_stable_offset(tp)
                if records:
                    found[tp] = (hw, records[0])
                elif hw is not None and (not need_record or hw <= positions[tp]):
                    found[tp] = (hw, None)
        return found

    async def high_watermarks(self, topic: str) -> dict[int, int]:
        """The end of each partition of ``topic`` for a read-committed reader: the last stable
        offset (offset after the last record of a decided transaction or a record written
        outside one; an open transaction holds it back). Lag is measured against it, so a
        group caught up reads 0 although transaction markers take offsets."""
        tps = [TopicPartition(topic, p) for p in await self.partitions(topic)]
        ends: dict[TopicPartition, int] = await self._reader.end_offsets(tps)
        return {tp.partition: ends[tp] for tp in tps}

    async def last_records(self, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
        """:meth:`record_ends` of every partition of ``topic``, by partition number."""
        tps = [TopicPartition(topic, p) for p in await self.partitions(topic)]
        return {tp.partition: end for tp, end in (await self.record_ends(tps, timeout_s)).items()}

    async def record_ends(self, tps: list[TopicPartition],
                          timeout_s: float = 30.0) -> dict[TopicPartition, int]:
        """The offset after the last record a read-committed consumer is given, for each of
        ``tps`` (0: none): the last stable offset less the transaction markers and aborted
        records at the partition's end. Faust's table recovery is done when it has applied the
        record before the end it is told, so it must be told this end.

        Reads backwards from the last stable offset in growing windows (8, 64, ... offsets)
        until a window holds a record, every partition's window in the same pass (one fetch
        round for all, not one per partition: a recovery asks for every changelog partition a
        worker holds).

        Raises:
            TimeoutError: a pass was not read within ``timeout_s`` seconds.
        """
        if not tps:
            return {}
        # Assigned first, the client asks for every topic's metadata at once: unassigned,
        # ListOffsets learned one unknown topic per retry, 100 ms each (0.7 s for the seven
        # changelogs of a worker's recovery).
        self._reader.assign(tps)
        ends: dict[TopicPartition, int] = await self._reader.end_offsets(tps)
        starts: dict[TopicPartition, int] = await self._reader.beginning_offsets(tps)
        result = {tp: 0 for tp in tps}
        todo = [tp for tp in tps if ends[tp] > starts[tp]]
        window = 8
        while todo:
            frm = {tp: max(starts[tp], ends[tp] - window) for tp in todo}
            last = await self._last_records(frm, ends, timeout_s)
            for tp, offset in last.items():
                result[tp] = offset + 1
            todo = [tp for tp in todo if tp not in last and frm[tp] > starts[tp]]
            window *= 8
        return result

    async def _last_records(self, frm: dict[TopicPartition, int],
                            ends: dict[TopicPartition, int],
                            timeout_s: float) -> dict[TopicPartition, int]:
        """The offset of the last record in [``frm[tp]``, ``ends[tp]``) that a read-committed
        consumer is given, for each partition of ``frm`` that has one."""
        self._reader.assign(list(frm))
        for tp, offset in frm.items():
            self._reader.seek(tp, offset)
        last: dict[TopicPartition, int] = {}
        pending = set(frm)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for tp in list(pending):
                if await self._reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    self._reader.pause(tp)
            if not pending:
                return last
            if loop.time() > deadline:
                tp = min(pending)
                raise TimeoutError(f"{tp.topic}/{tp.partition} was not read from {frm[tp]} to "
                                   f"{ends[tp]} within {timeout_s:.0f} s")
            batch = await self._reader.getmany(*pending, timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        last[tp] = record.offset

    async def log_starts(self, topic: str) -> dict[int, int]:
        """The log start offset (earliest offset still held) of each partition of ``topic``."""
        tps = [TopicPartition(topic, p) for p in await self.partitions(topic)]
        starts: dict[TopicPartition, int] = await self._reader.beginning_offsets(tps)
        return {tp.partition: offset for tp, offset in starts.items()}

    async def first_offset_from(self, topic: str, partition: int, offset: int) -> int | None:
        """The offset of the first record of ``topic``/``partition`` at or after ``offset``, or
        None when there is none (offsets without records, e.g. transaction markers, are
        passed over)."""
        tp = TopicPartition(topic, partition)
        found = await self._fetch_from({tp: offset}, need_record=True)
        record = found.get(tp, (None, None))[1]
        return record.offset if record is not None else None

    async def committed(self, group: str, topic: str) -> dict[int, int | None]:
        """The committed offset of ``group`` on each partition of ``topic`` (None: none yet)."""
        client = self._groups.get(group)
        if client is None:
            client = consumer(self.settings, group)
            await start(client)
            self._groups[group] = client
        return {p: await client.committed(TopicPartition(topic, p))
                for p in await self.partitions(topic)}

    async def timestamps_at(self, topic: str, offsets: dict[int, int]) -> dict[int, float]:
        """The timestamp (seconds since the epoch) of the record at each partition's offset;
        partitions with no record there are left out."""
        if not offsets:
            return {}
        found = await self._fetch_from({TopicPartition(topic, p): o for p, o in offsets.items()},
                                       need_record=True)
        return {tp.partition: record.timestamp / 1000 for tp, (_, record) in found.items()
                if record is not None}


async def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    """One-shot :meth:`OffsetReader.high_watermarks`."""
    async with OffsetReader(settings) as reader:
        return await reader.high_watermarks(topic)


async def read_to_end(settings: Settings, topic: str,
                      on_progress: Callable[[int, int], None] | None = None
                      ) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` a read-committed reader is given, from each partition's log
    start to its last stable offset when the read began (partition by partition in fetch
    order; offset order within a partition). Joins no consumer group and commits nothing, so
    it never disturbs the pipeline's groups: the audits' and replays' reader.

    Args:
        on_progress: called after each fetch with (records yielded, records between the
            partitions' starts and ends: an upper bound, markers and aborted records included).

    Raises:
        LookupError: the topic does not exist.
        KafkaError: the brokers cannot be reached.
    """
    client = consumer(settings, None, fetch_max_wait_ms=100)
    await start(client)
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_for(client, topic)]
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await client.end_offsets(tps)
        starts = {tp: await client.position(tp) for tp in tps}
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        read = 0
        left = {tp for tp in tps if starts[tp] < ends[tp]}
        while left:
            batch = await client.getmany(*left, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    read += 1
                    yield record
            # the position passes transaction markers and aborted records too
            left = {tp for tp in left if await client.position(tp) < ends[tp]}
            if on_progress is not None:
                on_progress(read, total)
    finally:
        await client.stop()
