"""The Faust worker: validate -> DLQ | dedupe by event id -> fold into the totals table.

Two tables, both partitioned like the source topic (key = student, so all of one student's
event ids live in the student's partition):
- ``xp_totals``: student_id -> :class:`~streams.totals.fold.Totals` (its changelog feeds the
  totals writer);
- ``xp_dedupe``: event id (16 bytes) -> :class:`~streams.totals.dedupe.Sighting`, kept for
  the dedupe horizon, then expired; older ids are checked against the ledger (guarantee 8).

Crash safety (guarantee 4, STYLE.md): Faust flushes changelogs before it commits the source
offset, but a kill -9 can leave changelog entries ahead of the commit, and the local RocksDB
store ahead of the changelog. The fold is therefore idempotent for a re-delivered record: the
sighting remembers the record's position, the totals remember the last applied position, a
record at or before it is not applied again, and its current state is written to the
changelog again so that nothing only the dead process's local store knew is lost.

A Faust agent that raises loses the record (faust-streaming agents guide), so every error of
bad input is caught here and sent to the DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.streams import _current_event
from faust.types import TP, EventT
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from streams import topics
from streams.db.connect import aconnect, mapped_errors
from streams.db.queries import query
from streams.errors import DatabaseUnavailable, InvalidEvent
from streams.events import XpEvent, decode_record
from streams.kafka import OffsetReader
from streams.metrics import Metrics
from streams.settings import Settings
from streams.totals.dedupe import (
    Sighting,
    Verdict,
    classify,
    decode_sighting,
    encode_sighting,
    expired,
    from_ledger,
)
from streams.totals.delivery import (
    CHECK_INTERVAL_SECONDS,
    DeliveryGuard,
    guard_topic,
    install_commit_guard,
)
from streams.totals.fold import Totals, already_applied, decode_totals, encode_totals, fold

log = logging.getLogger(__name__)


def faust_broker_urls(settings: Settings) -> list[str]:
    """Faust's form of the bootstrap list: ``kafka://host:port`` each."""
    return [f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")]


def correct_recovery_highwaters(settings: Settings) -> None:
    """Make Faust's table recovery use true high watermarks of the changelogs.

    Faust reads a changelog up to the high watermark from ListOffsets(latest), and refuses to
    start when a persisted offset is above it. Tansu answers the base offset of the last record
    batch instead, so recovery would stop short of the last records (state loss) or fail with
    ``ConsistencyError`` after a kill -9. This wraps Faust's lookup with
    :meth:`streams.kafka.OffsetReader.high_watermarks`, which corrects it with one fetch and
    changes nothing on brokers that answer right.
    """
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._highwaters
    if getattr(original, "corrected", False):
        return

    async def _highwaters(self: Any, partitions: list[Any]) -> dict[Any, int]:
        result = dict(await original(self, partitions))
        async with OffsetReader(settings) as reader:
            for topic in {tp.topic for tp in partitions}:
                true_ends = await reader.high_watermarks(topic)
                for tp in partitions:
                    if tp.topic == topic and tp.partition in true_ends:
                        result[tp] = max(result.get(tp) or 0, true_ends[tp.partition])
        return result

    _highwaters.corrected = True  # type: ignore[attr-defined]
    setattr(driver.AIOKafkaConsumerThread, "_highwaters", _highwaters)  # noqa: B010


def set_fetch_max_wait(settings: Settings) -> None:
    """Give the Faust worker's consumer ``settings.fetch_max_wait_ms``.

    Faust's aiokafka driver fixes ``fetch_max_wait_ms=1500``; Tansu answers a fetch at the end
    of a partition only when that expires, so every record would wait up to 1.5 s before the
    worker sees it. This wraps the driver's consumer factory and changes that one value.
    """
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "wrapped", False):
        return

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        client = original(self, transport)
        client._fetch_max_wait_ms = settings.fetch_max_wait_ms
        return client

    _create_worker_consumer.wrapped = True  # type: ignore[attr-defined]
    setattr(driver.AIOKafkaConsumerThread, "_create_worker_consumer",  # noqa: B010
            _create_worker_consumer)


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` (app id = the worker's consumer group)."""
    credentials: Any = None
    client = settings.kafka_client_kwargs()
    if settings.kafka_security_protocol.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
            mechanism=client["sasl_mechanism"], ssl_context=client.get("ssl_context"),
        )
    elif settings.kafka_security_protocol == "SSL":
        credentials = faust.SSLCredentials(client["ssl_context"])
    return faust.App(
        settings.worker_group,
        broker=faust_broker_urls(settings),
        broker_credentials=credentials,
        store=settings.table_store,
        datadir=settings.data_dir,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=max(0.5, settings.broker_session_timeout / 5),
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_commit_interval=settings.commit_interval,
        producer_acks=-1,
        # Table changelog writes are one record per update: let them batch, or the broker gets
        # one produce request per record (Tansu then spends a core on them).
        producer_linger=max(0.001, settings.producer_linger_ms / 1000),
        producer_max_batch_size=256 * 1024,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_standby_replicas=0,
    )


def store_options(settings: Settings) -> dict[str, int]:
    """RocksDB options of each table store within ``settings.rocksdb_memory_mb``: half block
    cache, half two write buffers (the memory store ignores them)."""
    budget = settings.rocksdb_memory_mb * 1024 * 1024
    return {"block_cache_size": budget // 2, "block_cache_compressed_size": 0,
            "write_buffer_size": budget // 4, "max_write_buffer_number": 2,
            "target_file_size_base": budget // 4}


def select(event: EventT[bytes]) -> None:
    """Make ``event`` Faust's current event in this task: its partition picks the table's
    store partition. Faust reads it from a context variable that ``take_events`` leaves unset
    in the agent's task. Only the context variable: the stream's ``current_event`` attribute is
    what ``take_events`` buffers next, and setting it loses and repeats records (seen in the
    demo before this was right)."""
    _current_event.set(weakref.ref(event))


async def dead_letter(event: EventT[bytes], exc: InvalidEvent, dlq: Any, metrics: Metrics,
                      stage: str) -> None:
    """Send ``event``'s record (original key and bytes) to the Faust topic ``dlq``, in the
    source record's partition, with the reason, detail and source position in headers
    (DESIGN.md section 3); counts it under ``stage``."""
    msg = event.message
    metrics.records.labels(stage, "invalid").inc()
    metrics.dlq.labels(exc.reason).inc()
    headers = [
        ("reason", exc.reason.encode()),
        ("detail", exc.detail[:500].encode("utf-8", "replace")),
        ("source_topic", msg.topic.encode()),
        ("source_partition", str(msg.partition).encode()),
        ("source_offset", str(msg.offset).encode()),
    ]
    await event.send(dlq, key=msg.key, value=msg.value, headers=headers,
                     partition=msg.partition % (dlq.partitions or 1))


class ChangelogWriter:
    """Writes a Faust table's entries: the local store, and the changelog record sent straight
    to the app's producer.

    Faust's own path (``table[key] = value``) queues each changelog record in its
    ProducerBuffer, runs its sensors, and writes the changelog offset to RocksDB on every
    acknowledgement; profiled, that was most of the worker's time (issue 7). Here a record is
    handed to aiokafka at once (which batches and applies backpressure), acknowledgements only
    note the offset, and :meth:`persist_offsets` stores the newest per partition once per
    batch. Faust's offset commit flushes the producer first, so a source offset is never
    committed before the changelog records of its batch are written (guarantee 4). A changelog
    record that fails for good ends the process without committing, like any unexpected error.
    """

    def __init__(self, app: faust.App, table: Any) -> None:
        self.app = app
        self.table = table
        self.topic: str = table.changelog_topic.get_topic_name()
        self._acked: dict[int, int] = {}

    async def put(self, event: EventT[bytes], key: bytes, value: bytes) -> None:
        """Store ``key`` -> ``value`` in the partition of ``event`` and send its changelog
        record (may wait while the producer's buffer is full)."""
        select(event)
        self.table.data[key] = value
        fut = await self.app.producer.send(self.topic, key, value, event.message.partition,
                                           None, None)
        fut.add_done_callback(self._on_ack)  # type: ignore[attr-defined]

    def _on_ack(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            log.critical("changelog record to %s not written (%s); exiting without commit",
                         self.topic, "cancelled" if fut.cancelled() else fut.exception())
            logging.shutdown()
            os._exit(70)
        meta = fut.result()
        if meta.offset > self._acked.get(meta.partition, -1):
            self._acked[meta.partition] = meta.offset

    def persist_offsets(self) -> None:
        """Record in the local store the newest acknowledged changelog offset per partition
        (Faust's recovery then reads the changelog from there)."""
        for partition, offset in self._acked.items():
            self.table.data.set_persisted_offset(TP(self.topic, partition), offset)
        self._acked.clear()


@dataclass
class _Batch:
    """Working state of one batch: what the tables will hold once it is written."""

    totals: dict[bytes, Totals | None] = field(default_factory=dict)
    """student key -> totals after the batch's events so far."""
    sightings: dict[bytes, Sighting] = field(default_factory=dict)
    """event id (16 bytes) -> first sighting, for ids read or first seen in this batch."""
    totals_writes: dict[bytes, EventT[bytes]] = field(default_factory=dict)
    """student key -> the last record that touched it (its partition is the key's)."""
    seen_writes: dict[bytes, EventT[bytes]] = field(default_factory=dict)
    """event id -> the record whose sighting is to be written."""
    counts: Counter[str] = field(default_factory=Counter)
    """events by outcome label (``valid``, ``redelivery``, ``duplicate``, ``conflict``)."""
    newest_created: float = 0.0
    """Newest created_at of the events applied (seconds since the epoch)."""


class XpWorker:
    """The worker's processing of batches of records; built by :func:`build`."""

    def __init__(self, app: faust.App, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.dlq = app.topic(settings.dlq_topic, partitions=settings.topic_partitions)
        options = store_options(settings)
        self.totals = app.Table(topics.TOTALS_TABLE, default=None, key_type=bytes,
                                value_type=bytes, partitions=settings.topic_partitions,
                                options=options)
        self.seen = app.Table(topics.DEDUPE_TABLE, default=None, key_type=bytes,
                              value_type=bytes, partitions=settings.topic_partitions,
                              options=dict(options))
        self.totals_log = ChangelogWriter(app, self.totals)
        self.seen_log = ChangelogWriter(app, self.seen)
        self._conn: Any = None
        self._newest_created = 0.0
        self.delivery = DeliveryGuard(app, settings, metrics)
        self.limits = settings.limits()

    async def process_batch(self, events: Sequence[EventT[bytes]]) -> None:
        """Handle a batch of records of the XP topic, in order. Never raises for bad input.

        Per record: validate (invalid -> DLQ); per event in it (one, or a batched record's
        events in order): classify its event id (:mod:`.dedupe`), fold a new event into its
        student's totals (:mod:`.fold`). The batch's table writes are made once per key at the
        end: one changelog record per student touched (its newest totals) and one per new
        event id, instead of one per event (issue 7). Faust acks the batch's offsets only after
        this returns, so a crash re-delivers the whole batch; the fold and the dedupe rule make
        that idempotent (module docstring).
        """
        now = time.time()
        batch = _Batch()
        for event in events:
            msg = event.message
            if not await self.delivery.admit(msg.partition, msg.offset):
                batch.counts["skipped"] += 1
                continue
            try:
                evs = decode_record(msg.key, msg.value, self.limits,
                                    (msg.partition, self.settings.topic_partitions), msg.timestamp)
            except InvalidEvent as exc:
                await self.dead_letter(event, exc)
                continue
            for index, ev in enumerate(evs):
                await self.take(batch, event, ev, index, now)
        await self.write(batch)
        self.delivery.written()
        for outcome, n in batch.counts.items():
            self.metrics.records.labels("worker", outcome).inc(n)
        if batch.newest_created > self._newest_created:
            self._newest_created = batch.newest_created
            self.metrics.freshness.labels("worker").set(batch.newest_created)

    async def take(self, batch: _Batch, event: EventT[bytes], ev: XpEvent, index: int,
                   now: float) -> None:
        """Dedupe and fold one event ``ev``, at ``index`` in record ``event``, into ``batch``."""
        msg = event.message
        id_key = uuid.UUID(ev.id).bytes
        sighting = batch.sightings.get(id_key)
        if sighting is None:
            select(event)
            raw_seen = self.seen.get(id_key)
            if raw_seen is not None:
                sighting = batch.sightings[id_key] = decode_sighting(raw_seen)
        verdict = classify(sighting, ev.fingerprint, msg.partition, msg.offset, index)
        created = ev.created_at.timestamp()
        if verdict is Verdict.NEW and created < now - self.settings.dedupe_horizon_seconds:
            verdict = from_ledger(await self.ledger_position(ev.id), ev.fingerprint,
                                  msg.partition, msg.offset, index)
            self.metrics.ledger_checks.labels(verdict.value).inc()
        if verdict in (Verdict.DUPLICATE, Verdict.CONFLICT):
            batch.counts[verdict.value] += 1
            if verdict is Verdict.CONFLICT:
                log.warning("conflict: event %s at %s/%s[%s] differs from its first sighting; "
                            "the first one wins", ev.id, msg.partition, msg.offset, index)
            return
        try:
            outcome = self.apply(batch, event, ev, index, now)
        except InvalidEvent as exc:  # total_overflow: the ledger keeps it, reconcile reports
            await self.dead_letter(event, exc)
            return
        batch.counts[outcome] += 1
        batch.newest_created = max(batch.newest_created, created)
        if sighting is None:
            batch.sightings[id_key] = Sighting(
                ev.fingerprint, msg.partition, msg.offset, now, created, index)
        # A sighting read again (here always a REDELIVERY) is written again: the changelog
        # may not have it (see apply).
        batch.seen_writes[id_key] = event

    def apply(self, batch: _Batch, event: EventT[bytes], ev: XpEvent, index: int,
              now: float) -> str:
        """Fold ``ev`` (at ``index`` in record ``event``) into its student's totals in
        ``batch`` unless it is already folded in; return the outcome (``valid``/``redelivery``)."""
        msg = event.message
        key = ev.student_id.encode()
        if key in batch.totals:
            current: Totals | None = batch.totals[key]
        else:
            select(event)
            raw = self.totals.get(key)
            current = decode_totals(raw) if raw is not None else None
        batch.totals_writes[key] = event
        if already_applied(current, msg.partition, msg.offset, index):
            # The local store (RocksDB survives kill -9) can hold a fold whose changelog record
            # was still in the producer buffer when the process died. Write the current value
            # again, so the changelog, the totals writer and any other worker recovering this
            # partition get it; downstream the version guard makes it idempotent.
            batch.totals[key] = current
            return "redelivery"
        batch.totals[key] = fold(current, ev, msg.partition, msg.offset, now, index)
        return "valid"

    async def write(self, batch: _Batch) -> None:
        """Write the batch's newest totals per student and its sightings to the tables (local
        store + changelog), each under the record it came from (its partition)."""
        for key, event in batch.totals_writes.items():
            totals = batch.totals[key]
            if totals is not None:
                await self.totals_log.put(event, key, encode_totals(totals))
        for id_key, event in batch.seen_writes.items():
            await self.seen_log.put(event, id_key, encode_sighting(batch.sightings[id_key]))
        self.totals_log.persist_offsets()
        self.seen_log.persist_offsets()

    async def dead_letter(self, event: EventT[bytes], exc: InvalidEvent) -> None:
        """Send the record to the XP topic's DLQ (:func:`dead_letter`)."""
        await dead_letter(event, exc, self.dlq, self.metrics, "worker")

    async def ledger_position(self, event_id: str) -> tuple[int, int, int, bytes] | None:
        """Return (partition, offset, record_index, fingerprint) of ``event_id`` in the
        ledger, or None.

        Retries with backoff while the database is unavailable (the agent waits).
        """
        result: list[tuple[int, int, int, bytes]] = []
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DatabaseUnavailable),
            wait=wait_exponential_jitter(initial=0.2, max=self.settings.db_retry_max_seconds),
            reraise=True,
        ):
            with attempt:
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await aconnect(self.settings.database_url, autocommit=True)
                    with mapped_errors(self.settings.database_url):
                        cur = await self._conn.execute(query("ledger_position"), {"id": event_id})
                        result = [(p, o, i, bytes(fp)) for p, o, i, fp in await cur.fetchall()]
                except DatabaseUnavailable:
                    self._conn = None
                    raise
        return result[0] if result else None

    def expire(self, now: float) -> int:
        """Drop dedupe entries past the horizon; return how many. Tombstones go to the changelog
        partition recorded in each sighting (a timer has no current event to take it from)."""
        horizon = self.settings.dedupe_horizon_seconds
        doomed = [(k, s) for k, s in ((k, decode_sighting(v)) for k, v in list(self.seen.items()))
                  if expired(s, now, horizon)]
        for key, sighting in doomed:
            self.seen.data.pop(key, None)
            self.seen.send_changelog(sighting.partition, key, None)
        if doomed:
            self.metrics.dedupe_expired.inc(len(doomed))
        return len(doomed)


def dump_state(app: faust.App, worker: XpWorker) -> None:
    """Log, at WARNING, what a stalled worker is waiting for (``kill -USR1 <pid>``): per
    partition of the XP topic Faust's committed/read offsets, the consumer's position and high
    watermark, the delivery guard's next and committable offsets; the agent's queue; then the
    chain of awaits of every asyncio task. Reads Faust and aiokafka internals, so any part of
    it may say "unavailable" after an upgrade."""
    import io

    lines = [f"in_recovery={app.in_recovery} flow_active={app.flow_control.is_active()} "
             f"generation={app.consumer_generation_id}"]
    try:
        consumer: Any = app.consumer
        client = consumer._thread._ensure_consumer()
        guard = worker.delivery
        assignment = client._subscription.subscription.assignment
        for tp in sorted(consumer.assignment()):
            if tp.topic == worker.settings.xp_topic:
                lines.append(
                    f"{tp.topic}/{tp.partition}: committed={consumer._committed_offset.get(tp)}"
                    f" read={consumer._read_offset.get(tp)}"
                    f" position={assignment.state_value(tp).position}"
                    f" highwater={client.highwater(tp)} next={guard.next.get(tp.partition)}"
                    f" committable={guard.committable.get(tp.partition)}")
        for agent in app.agents.values():
            lines.append(f"agent {agent.name}: queue {agent.channel.queue.qsize()}"
                         f"/{agent.channel.queue.maxsize}, unacked {len(consumer.unacked)}")
    except Exception as exc:  # a diagnostic must not fail on a Faust or aiokafka change
        lines.append(f"(consumer detail unavailable: {exc!r})")
    out = io.StringIO()
    for task in asyncio.all_tasks(app.loop):
        out.write(f"--- {task.get_name()}\n")
        awaiting: Any = task.get_coro()
        for _ in range(30):  # the chain of awaits, outermost first
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "ag_frame", None)
            if frame is not None:
                out.write(f"    {frame.f_code.co_filename}:{frame.f_lineno} "
                          f"{frame.f_code.co_name}\n")
            awaiting = (getattr(awaiting, "cr_await", None) or getattr(awaiting, "ag_await", None)
                        or getattr(awaiting, "gi_yieldfrom", None))
            if awaiting is None:
                break
    log.warning("state dump (SIGUSR1):\n%s\n%s", "\n".join(lines), out.getvalue())


def build(settings: Settings, metrics: Metrics) -> tuple[faust.App, XpWorker]:
    """Create the app, its tables, the agent on the XP topic and the expiry timer."""
    correct_recovery_highwaters(settings)
    set_fetch_max_wait(settings)
    app = create_app(settings)
    # Faust's own sensor for its internals (events, commits, rebalances), prefixed "faust_",
    # served by this process's /metrics with the pipeline's metrics.
    if settings.faust_sensor:
        setup_prometheus_sensors(app, registry=metrics.registry, name_prefix="faust")
    install_commit_guard()
    worker = XpWorker(app, settings, metrics)
    source = app.topic(settings.xp_topic, partitions=settings.topic_partitions)

    def on_rebalance(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust sends the revoked / the assigned partitions (a set of TP) as first argument.
        worker.delivery.forget({tp.partition for tp in args[0]
                                if tp.topic == settings.xp_topic})

    async def on_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await worker.delivery.close()

    app.on_partitions_revoked.connect(on_rebalance)
    app.on_partitions_assigned.connect(on_rebalance)
    app.on_before_shutdown.connect(on_shutdown)

    @app.agent(source, name="fold_xp")
    async def fold_xp(stream: faust.StreamT[bytes]) -> None:
        # From here on Faust commits what the delivery guard allows (streams.totals.delivery).
        guard_topic(app.consumer, worker.delivery)
        # take_events exists on faust's Stream, not on its StreamT interface.
        batches = stream.take_events(  # type: ignore[attr-defined]
            settings.worker_batch_records, within=settings.worker_batch_seconds)
        async for events in batches:
            try:
                await worker.process_batch(events)
            except Exception:
                # Faust would ack these records and move on (losing them). A bug or an outage
                # we do not handle must not skip a record: exit at once without committing,
                # like kill -9; the batch is re-delivered after the restart (guarantee 4).
                first = events[0].message
                log.critical("unexpected error in the batch from %s/%s; exiting without commit",
                             first.partition, first.offset, exc_info=True)
                logging.shutdown()
                os._exit(70)

    @app.task  # type: ignore[untyped-decorator]
    async def dump_state_on_sigusr1() -> None:
        app.loop.add_signal_handler(signal.SIGUSR1, dump_state, app, worker)

    @app.timer(interval=CHECK_INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def check_stalls() -> None:
        await worker.delivery.check_stalls()

    @app.timer(interval=settings.dedupe_expire_interval_seconds)  # type: ignore[untyped-decorator]
    async def expire_dedupe() -> None:
        dropped = worker.expire(time.time())
        if dropped:
            log.info("dedupe: expired %d entries past the horizon", dropped)
        await asyncio.sleep(0)

    return app, worker
