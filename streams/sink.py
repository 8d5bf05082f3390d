"""The PostgreSQL sink loop shared by every sink, and the two writer bases
(:class:`LedgerRowsWriter`, append-only; :class:`LatestPerKeyWriter`, newest value per key).

One consumer group reads a topic; records are collected with ``writer.add()`` and written with
``writer.flush()`` in one transaction together with the consumed offsets (table
``consumer_offsets``), so the database holds exactly what it says it has read, across crashes
and rebalances (Kafka's consumer docs: "Storing Offsets Outside Kafka"). The steps, in order:

    poll -> add (decode, validate) -> batch full? -> write rows + offsets in one transaction
         -> commit offsets to Kafka (for lag monitoring only)

A full batch is written in the background while the next one is read and validated (one
write at a time, in order), so the sink's CPU work and PostgreSQL's overlap. A batch due by
time (``XP_SINK_BATCH_SECONDS``) while the one before it is still being written keeps growing
until that write ends or it is full: under a backlog, batches grow to what the database takes.

A partition assigned to this process starts at the offset stored in PostgreSQL, taken by the
poll loop before any of its records is added (docs/design.md, "Sinks: batches and rows"). A
database error pauses the loop: the same batch is retried with exponential backoff until it
commits (docs/design.md, guarantee 6); the next batch is read until it is full and then
waits, so memory stays bounded by two batches (``XP_SINK_BATCH_RECORDS``/
``XP_SINK_BATCH_BYTES`` each).

A row PostgreSQL refuses (:data:`REFUSALS`: a CHECK, a length, an encoding, a foreign key) is
not an outage: retrying would refuse it for ever and halt the sink. The batch is bisected by
source record, each part written under a savepoint, until the refused records are alone; they
go to ``XP_SINK_DLQ_TOPIC`` with the database's message (acknowledged before the transaction
commits: at least once, their source position headers identify them), and the rest of the
batch and the offsets commit as one transaction (docs/design.md, "Sinks: refused rows").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, Self, TypeVar

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from psycopg.pq import TransactionStatus
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from streams import kafka, topology
from streams.db.connect import aconnect, mapped_errors
from streams.db.queries import query
from streams.errors import DatabaseUnavailable, InvalidEvent
from streams.events import Limits
from streams.logs import log_context
from streams.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

DB_PROBE_S = 5.0
"""An idle sink checks PostgreSQL this often (seconds), for its readiness."""

REFUSALS = (psycopg.errors.IntegrityError, psycopg.errors.DataError,
            psycopg.errors.ProgramLimitExceeded)
"""What PostgreSQL says about a row it will never take, however often it is asked: integrity
(CHECK, NOT NULL, foreign key), data (a value too long or out of range, bad encoding, a NUL
byte) and program limits (an index row too large)."""

YIELD_EVERY_RECORDS = 100
"""Records added between two turns of the event loop (each turn lets the batch being written
advance by one round trip to PostgreSQL)."""



class BatchWriter(Protocol):
    """What a sink writes: collects records, hands them over as a batch, writes a batch in the
    caller's transaction."""

    name: str
    """Sink name for metrics and logs (``ledger``, ``totals``)."""

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Take one record (may skip it, e.g. an invalid one)."""

    def pending(self) -> int:
        """Records added since the last :meth:`take` or :meth:`discard`."""

    def take(self) -> Any:
        """Return what was added as a batch and start a new one."""

    async def write(self, conn: psycopg.AsyncConnection, batch: Any) -> None:
        """Write ``batch`` (from :meth:`take`) inside the open transaction of ``conn``. Must
        not change it: the transaction may still fail to commit, and then the same batch is
        written again."""

    def discard(self) -> None:
        """Forget everything added (the batch will be read again)."""


Row = tuple[object, ...]
V = TypeVar("V")


class Rows(list[Row]):
    """A ledger batch: its rows (each event once), and the ``created_at`` of its newest event
    in seconds since the epoch (0.0 when the writer does not say, see
    :meth:`LedgerRowsWriter.saw`), for the freshness metric once the batch is written."""

    newest_s: float = 0.0


class LedgerRowsWriter:
    """Base of the append-only ledger writers (a :class:`BatchWriter`): each record is decoded
    and validated with the worker's rules into rows keyed by event (id and owner: the first in
    a batch wins), and a batch is COPYed into a staging table and moved with ``INSERT ... ON
    CONFLICT (id, owner) DO NOTHING`` (queries ``stage_<name>``, ``copy_<name>``,
    ``insert_<name>``), so a re-delivered batch or a duplicate event is an idempotent hit, never
    a second row (docs/design.md, guarantees 1 and 2, and Contracts: an id sent for two owners
    is two events, counted in ``xp_sink_shared_ids_total``). Invalid records are counted and
    skipped: the worker alone writes the DLQ.

    A subclass sets :attr:`name` and implements :meth:`rows`.
    """

    name = ""
    """Sink name for metrics, logs and query names (``ledger``, ``actions``)."""

    def __init__(self, limits: Limits, partitions: int, metrics: Metrics) -> None:
        self.limits = limits
        self.partitions = partitions
        self.metrics = metrics
        self._rows: dict[tuple[str, str], Row] = {}  # (id, owner) -> row; the first wins
        self._added = 0
        self._invalid = 0
        self._newest_s = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> Self:
        """The writer for ``settings`` (validation limits, partition count)."""
        return cls(settings.limits(), settings.topic_partitions, metrics)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[tuple[str, str], Row]]:
        """((event id, owner), ``copy_<name>`` row) for each event of ``record`` (the owner:
        the student or profile the record is keyed by).

        Raises:
            InvalidEvent: the record breaks its contract (docs/design.md, Contracts).
        """
        raise NotImplementedError

    def wrote(self, rows: Rows) -> None:
        """Called after a batch's rows were written (a subclass may export a metric)."""

    def saw(self, created_s: float) -> None:
        """Note an event's ``created_at`` (seconds since the epoch) for the batch's
        :attr:`Rows.newest_s` (:meth:`rows` calls it, if the subclass exports freshness)."""
        if created_s > self._newest_s:
            self._newest_s = created_s

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Validate ``record`` and keep a row per event in it; an invalid record is counted
        and skipped."""
        self._added += 1
        try:
            rows = self.rows(record)
        except InvalidEvent as exc:
            self._invalid += 1
            log.debug("%s: skipping invalid record %s/%s: %s", self.name, record.partition,
                      record.offset, exc)
            return
        for identity, row in rows:
            self._rows.setdefault(identity, row)

    def pending(self) -> int:
        """Records added since the last take (valid or not)."""
        return self._added

    def take(self) -> Rows:
        """Return the batch's rows (each event once) and start a new batch. Counts the
        batch's records by outcome (one metrics update per batch, not per record)."""
        rows = Rows(self._rows.values())
        rows.newest_s = self._newest_s
        self.metrics.records.labels(self.name, "valid").inc(self._added - self._invalid)
        self.metrics.records.labels(self.name, "invalid").inc(self._invalid)
        self.discard()
        return rows

    async def write(self, conn: psycopg.AsyncConnection, rows: Rows) -> None:
        """COPY ``rows`` to staging and insert the new ones, in ``conn``'s transaction; count
        the inserted rows whose id another owner holds too."""
        if not rows:
            return
        async with conn.cursor() as cur:
            await cur.execute(query(f"stage_{self.name}"))
            async with cur.copy(query(f"copy_{self.name}")) as copy:
                for row in rows:
                    await copy.write_row(row)
            await cur.execute(query(f"insert_{self.name}"))
            inserted, shared = await cur.fetchone() or (0, 0)
        self.metrics.sink_rows.labels(self.name, "inserted").inc(inserted)
        self.metrics.sink_rows.labels(self.name, "present").inc(len(rows) - inserted)
        if shared:
            self.metrics.sink_shared_ids.labels(self.name).inc(shared)
            log.warning("%s: %d new rows carry an event id another owner holds too (a client "
                        "reusing ids?): each counts for its own owner", self.name, shared)
        self.wrote(rows)

    def discard(self) -> None:
        """Forget the batch."""
        self._rows = {}
        self._added = 0
        self._invalid = 0
        self._newest_s = 0.0


class LatestPerKeyWriter(Generic[V]):
    """Base of the table writers (a :class:`BatchWriter`): each changelog record holds a key's
    whole value; a batch keeps the newest value per key (highest :meth:`version`) and upserts
    it with a guard (``WHERE stored version < new version``, query ``upsert_<name>`` after
    ``stage_<name>`` and ``copy_<name>``), so a row never moves backwards, whatever order or
    how often records are re-read. A tombstone or an unreadable value is skipped (logged).

    A subclass sets :attr:`name` and implements :meth:`decode`, :meth:`version` and
    :meth:`row`.
    """

    name = ""
    """Sink name for metrics, logs and query names (``totals``, ``progress``)."""
    upsert_params: dict[str, object] | None = None
    """Parameters of the ``upsert_<name>`` query, if it takes any."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._latest: dict[bytes, V] = {}
        self._added = 0

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> Self:
        """The writer for ``settings``."""
        return cls(metrics)

    def decode(self, value: bytes) -> V:
        """The value of a changelog record. Raises ``ValueError``/``TypeError`` when unreadable."""
        raise NotImplementedError

    def version(self, value: V) -> int:
        """How far ``value`` has come (a higher one replaces a lower one)."""
        raise NotImplementedError

    def row(self, key: bytes, value: V) -> Row:
        """The ``copy_<name>`` row of ``value`` under ``key``."""
        raise NotImplementedError

    def wrote(self, latest: dict[bytes, V]) -> None:
        """Called after a batch was written (a subclass may export a metric)."""

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Keep the record's value if it is the newest seen for its key in this batch."""
        self._added += 1
        if record.key is None or record.value is None:
            return  # tombstone: the worker never deletes these rows
        try:
            value = self.decode(record.value)
        except (ValueError, TypeError) as exc:
            log.error("unreadable %s record at %s/%s: %s", self.name, record.partition,
                      record.offset, exc)
            return
        current = self._latest.get(record.key)
        if current is None or self.version(value) > self.version(current):
            self._latest[record.key] = value

    def pending(self) -> int:
        """Records added since the last take."""
        return self._added

    def take(self) -> dict[bytes, V]:
        """Return the batch (key -> newest value) and start a new batch."""
        latest = self._latest
        self.discard()
        return latest

    async def write(self, conn: psycopg.AsyncConnection, latest: dict[bytes, V]) -> None:
        """Upsert ``latest``, never lowering a stored version, in ``conn``'s transaction."""
        if not latest:
            return
        async with conn.cursor() as cur:
            await cur.execute(query(f"stage_{self.name}"))
            async with cur.copy(query(f"copy_{self.name}")) as copy:
                for key, value in latest.items():
                    await copy.write_row(self.row(key, value))
            await cur.execute(query(f"upsert_{self.name}"), self.upsert_params)
            written = max(cur.rowcount, 0)
        self.metrics.sink_rows.labels(self.name, "inserted").inc(written)
        self.metrics.sink_rows.labels(self.name, "present").inc(len(latest) - written)
        self.wrote(latest)

    def discard(self) -> None:
        """Forget the batch."""
        self._latest = {}
        self._added = 0


@dataclass
class _Taken:
    """A batch handed over for writing, with the offsets it covers."""

    batch: Any
    records: int
    positions: dict[int, int]
    """partition -> next offset after the batch."""
    sources: list[ConsumerRecord[bytes, bytes]]
    """The records the batch was made from, in the order added (for isolating a refusal)."""


class PostgresSink:
    """Runs one :class:`BatchWriter` over one topic in one consumer group.

    Args:
        scratch: makes a writer like ``writer`` whose metrics go nowhere: the parts of a batch
            being bisected around a refused row are made with it (module docstring). None: a
            refusal ends the sink (as any unexpected error does).
    """

    def __init__(
        self, settings: Settings, topic: str, group: str, writer: BatchWriter, metrics: Metrics,
        scratch: Callable[[], BatchWriter] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self.writer = writer
        self.metrics = metrics
        self.scratch = scratch
        self._sources: list[ConsumerRecord[bytes, bytes]] = []
        self._dlq: AIOKafkaProducer | None = None
        self._positions: dict[int, int] = {}  # partition -> next offset, of the pending batch
        self._known: dict[int, int] = {}
        """partition -> the consumer's position last taken (or loaded at assignment)."""
        self._bytes = 0
        self._conn: psycopg.AsyncConnection | None = None
        self._consumer: AIOKafkaConsumer | None = None
        # One database operation at a time on the one connection: aiokafka runs the rebalance
        # listener in its own task, which flushes while the poll loop may be loading offsets or
        # flushing (two transactions at once nest, and psycopg then refuses the commit).
        self._db_lock = asyncio.Lock()
        self._inflight: asyncio.Task[None] | None = None  # the batch being written
        self._db_down: str | None = None
        """Why the last database operation failed (None: it succeeded)."""
        self._db_seen = 0.0
        """When a database operation last ended (monotonic seconds)."""
        self._assigned = False
        """Partitions assigned and their offsets loaded (between a revoke and the next: no)."""
        self._assignment_due = False
        """A new assignment the poll loop has not taken yet (set by the rebalance listener)."""
        self._rebalances = 0
        """Calls of the rebalance listener so far (revokes and assignments)."""
        self._rewind: dict[TopicPartition, int] = {}
        """First offset of each partition's records dropped while no assignment was taken."""
        self.adding = asyncio.Lock()
        """Held while a fetch is added to the batch (which yields to the event loop): the
        rebalance listener takes it first, so no record of a revoked partition is added after
        the listener flushed and reset the batch."""

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await aconnect(self.settings.database_url)
        return self._conn

    async def drop_connection(self) -> None:
        """Close the database connection (a new one is opened on the next write)."""
        if self._conn is not None:
            try:
                await self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    async def _with_retries(self, what: str, op: Callable[[], Awaitable[None]]) -> None:
        """Run ``op`` until it succeeds, backing off while the database is unavailable."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DatabaseUnavailable),
            wait=wait_exponential_jitter(initial=0.2, max=self.settings.db_retry_max_seconds),
            before_sleep=lambda rs: log.warning(
                "%s sink: %s failed (%s); retry %d", self.writer.name, what,
                rs.outcome.exception() if rs.outcome else "?", rs.attempt_number,
            ),
            reraise=True,
        ):
            with attempt:
                try:
                    await op()
                except DatabaseUnavailable as exc:
                    self.metrics.db_errors.labels(self.writer.name).inc()
                    self._db_down, self._db_seen = str(exc), time.monotonic()
                    await self.drop_connection()
                    raise
                self._db_down, self._db_seen = None, time.monotonic()

    def readiness(self) -> str | None:
        """``/readyz`` (:mod:`streams.health`): None while the sink has its partitions and
        PostgreSQL answers, else why not."""
        if self._consumer is None:
            return "waiting for the broker and the topic"
        if not self._assigned:
            return "waiting for a partition assignment (joining the group or rebalancing)"
        if self._db_down is not None:
            return f"PostgreSQL unavailable: {self._db_down}"
        return None

    async def _probe_database(self) -> None:
        """When no database operation ended for :data:`DB_PROBE_S` seconds and none runs, run
        ``SELECT 1``: readiness must notice an outage of an idle sink too."""
        if time.monotonic() - self._db_seen < DB_PROBE_S or self._db_lock.locked():
            return
        async with self._db_lock:
            try:
                conn = await self._connection()
                with mapped_errors(self.settings.database_url):
                    # In a transaction of its own: a bare execute would leave one open, and
                    # every later write would nest in it as a savepoint, never committed.
                    async with conn.transaction():
                        await conn.execute("SELECT 1")
                self._db_down = None
            except DatabaseUnavailable as exc:
                self._db_down = str(exc)
                await self.drop_connection()
            self._db_seen = time.monotonic()

    async def load_offsets(self) -> dict[int, int]:
        """Return the offsets stored for this group and topic (partition -> next offset)."""
        result: dict[int, int] = {}

        async def op() -> None:
            conn = await self._connection()
            with mapped_errors(self.settings.database_url):
                async with conn.transaction():
                    cur = await conn.execute(
                        query("load_offsets"), {"group": self.group, "topic": self.topic}
                    )
                    result.update({p: o for p, o in await cur.fetchall()})

        async with self._db_lock:
            await self._with_retries("loading offsets", op)
        return result

    async def flush(self) -> None:
        """Write everything read so far: wait for the batch being written, then write the
        pending one. Used by the rebalance listener and at shutdown."""
        await self._settle()
        taken = self._take()
        if taken is not None:
            await self._write(taken)

    async def _hand_off(self) -> None:
        """Start writing the pending batch in the background (after the previous one is
        written), so the next batch is read and validated while PostgreSQL writes this one.
        At most two batches are held: the one being written and the one being read."""
        await self._settle()
        taken = self._take()
        if taken is not None:
            self._inflight = asyncio.create_task(self._write(taken))

    async def _settle(self) -> None:
        """Wait for the batch being written, if any (its errors are raised here)."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    def _take(self) -> _Taken | None:
        if not self._positions:
            return None
        taken = _Taken(records=self.writer.pending(), batch=self.writer.take(),
                       positions=dict(self._positions), sources=self._sources)
        self._positions.clear()
        self._sources = []
        self._bytes = 0
        return taken

    async def _write(self, taken: _Taken) -> None:
        """Write ``taken`` and its offsets in one transaction, then commit to Kafka.

        Serialised by a lock with every other database operation: the rebalance listener
        flushes on the same connection. A write cancelled midway (the listener's
        timeout) drops the connection, whose transaction state is then unknown; the batch is
        re-read from the offsets in PostgreSQL."""
        async with self._db_lock:
            try:
                with log_context(stage=self.writer.name, group=self.group):
                    await self._write_locked(taken)
            except asyncio.CancelledError:
                await self.drop_connection()
                raise

    async def _write_locked(self, taken: _Taken) -> None:
        started = time.monotonic()

        async def op() -> None:
            conn = await self._connection()
            if conn.info.transaction_status != TransactionStatus.IDLE:
                # conn.transaction() would then be a savepoint, and the rows and offsets
                # would never commit: stop rather than lose them.
                raise RuntimeError(f"{self.writer.name} sink: a transaction is already open "
                                   "on its connection; a batch written now would not commit")
            with mapped_errors(self.settings.database_url):
                async with conn.transaction():
                    refused = await self._isolate(
                        conn, lambda: self.writer.write(conn, taken.batch), taken.sources)
                    if refused:
                        await self._dead_letter(refused)
                    parts = sorted(taken.positions)
                    await conn.execute(query("store_offsets"), {
                        "group": self.group, "topic": self.topic, "partitions": parts,
                        "offsets": [taken.positions[p] for p in parts],
                    })

        await self._with_retries("writing a batch", op)
        self.metrics.sink_batch_records.labels(self.writer.name).observe(taken.records)
        self.metrics.sink_batch_seconds.labels(self.writer.name).observe(time.monotonic() - started)
        self.metrics.last_commit.labels(self.writer.name).set_to_current_time()
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "")
                   for p, o in taken.positions.items()}
        if self._consumer is not None:
            try:  # for lag monitoring only: PostgreSQL holds the offsets that count
                await self._consumer.commit(offsets)
            except (KafkaError, IllegalStateError) as exc:
                # a rebalance, or the coordinator's node down (one of three killed): the
                # next batch's commit carries these offsets too
                log.info("%s sink: Kafka commit skipped (%r)", self.writer.name, exc)

    async def _isolate(self, conn: psycopg.AsyncConnection,
                       write: Callable[[], Awaitable[None]],
                       sources: list[ConsumerRecord[bytes, bytes]]
                       ) -> list[tuple[ConsumerRecord[bytes, bytes], psycopg.Error]]:
        """Run ``write`` (a batch made from ``sources``) under a savepoint of ``conn``'s
        transaction. When PostgreSQL refuses a row (:data:`REFUSALS`), write each half of
        ``sources`` the same way (as the batch of a :attr:`scratch` writer), down to single
        records. Returns the records refused alone, with PostgreSQL's error; everything else
        is written.

        Raises:
            psycopg.Error: a refusal with no :attr:`scratch` writer; anything else (an outage
                is mapped by the caller).
        """
        try:
            async with conn.transaction():
                await write()
            return []
        except REFUSALS as exc:
            if self.scratch is None or not sources:
                raise
            if len(sources) == 1:
                return [(sources[0], exc)]
        refused: list[tuple[ConsumerRecord[bytes, bytes], psycopg.Error]] = []
        mid = len(sources) // 2
        for half in (sources[:mid], sources[mid:]):
            part = self.scratch()
            for record in half:
                part.add(record)
            refused += await self._isolate(conn, partial(part.write, conn, part.take()), half)
        return refused

    async def _dead_letter(self, refused: list[tuple[ConsumerRecord[bytes, bytes],
                                                     psycopg.Error]]) -> None:
        """Send the refused records to ``XP_SINK_DLQ_TOPIC`` (created if missing) and wait for
        the acknowledgements, before the caller commits the rest: a refused record is never
        lost. Counted in ``xp_sink_refused_total`` and logged at ERROR, one line each.

        Raises:
            KafkaError: the broker did not acknowledge them (the batch is then not committed).
        """
        topic = self.settings.sink_dlq_topic
        if self._dlq is None:
            await kafka.create_missing(self.settings, [
                topology.TopicSpec(topic, self.settings.topic_partitions)])
            producer = kafka.producer(self.settings)
            await kafka.start(producer)
            self._dlq = producer
        sent = []
        for record, exc in refused:
            reason = refusal_reason(exc)
            detail = (exc.diag.message_primary or str(exc)).strip()
            if exc.diag.constraint_name:
                detail += f" (constraint {exc.diag.constraint_name})"
            key, value, headers = kafka.dead_letter(record, reason, detail,
                                                    ("sink", self.writer.name.encode()))
            sent.append(await self._dlq.send(topic, value, key=key, headers=headers,
                                             partition=record.partition
                                             % self.settings.topic_partitions))
            self.metrics.sink_refused.labels(self.writer.name, reason).inc()
            log.error("%s sink: PostgreSQL refused the row(s) of %s/%s at %s (%s: %s); the "
                      "record goes to %s, the rest of its batch is written", self.writer.name,
                      record.topic, record.partition, record.offset, reason, detail, topic)
        await asyncio.gather(*sent)

    def reset_batch(self) -> None:
        """Forget the pending batch (its partitions were revoked; it will be read again)."""
        self.writer.discard()
        self._positions.clear()
        self._sources = []
        self._bytes = 0

    def _add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.writer.add(record)
        self._sources.append(record)
        self._positions[record.partition] = record.offset + 1
        self._bytes += len(record.value or b"")

    def _drop(self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Drop records handed out before their assignment was taken (their offsets in
        PostgreSQL were not known yet), remembering where each partition's began: a partition
        with no offset stored is read again from there."""
        for tp, records in fetched.items():
            if records:
                self._rewind[tp] = min(records[0].offset, self._rewind.get(tp, records[0].offset))

    async def _take_assignment(self, consumer: AIOKafkaConsumer) -> None:
        """Start each assigned partition at its offset in PostgreSQL (one stored: there; none:
        where the records dropped before began, else the consumer's own start), before any of
        its records is added.

        aiokafka makes an assignment active, and fetches and hands out its records, before the
        rebalance listener runs; records added then were read from wherever the consumer
        started, and the positions after them were not taken (docs/design.md, "Sinks: batches
        and rows"). So the listener only marks the assignment due, the loop drops what it is
        handed meanwhile (:meth:`_drop`), and takes the assignment here, between two polls.
        The offsets are loaded with retries (a database outage waits here)."""
        self._assignment_due = False
        rebalances = self._rebalances
        stored = await self.load_offsets()
        if self._rebalances != rebalances:
            return  # revoked while loading: take the next assignment instead
        assigned = consumer.assignment()
        self._known.clear()
        starts: dict[int, int | str] = {}
        for tp in assigned:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
                starts[tp.partition] = self._known[tp.partition] = stored[tp.partition]
            elif tp in self._rewind:
                consumer.seek(tp, self._rewind[tp])
                starts[tp.partition] = self._rewind[tp]
            else:
                starts[tp.partition] = "committed or earliest"  # the consumer's own start
        self._rewind.clear()
        self._assigned = True
        log.info("%s sink: assigned %s, resuming at %s", self.writer.name,
                 sorted(starts), dict(sorted(starts.items())))

    async def _advance_positions(self, consumer: AIOKafkaConsumer,
                                 fetched: dict[TopicPartition, list[Any]]) -> None:
        """Take the consumer's position as the next offset of each partition read, not the last
        record + 1: a transaction's marker takes an offset (the worker writes its changelogs
        and outputs in transactions), and offsets short of it would leave the lag at 1 for
        good. A position that passed a marker with no record returned (a fetch that ended just
        before it) is taken too, as a batch without rows."""
        if not self._assigned:
            return
        for tp in consumer.assignment():
            if tp in fetched or tp.partition in self._known:
                position = await consumer.position(tp)
                if position != self._known.get(tp.partition):
                    self._positions[tp.partition] = self._known[tp.partition] = position

    def _writing(self) -> bool:
        """True while a batch is being written in the background."""
        return self._inflight is not None and not self._inflight.done()

    def _full(self) -> bool:
        return (self.writer.pending() >= self.settings.sink_batch_records
                or self._bytes >= self.settings.sink_batch_bytes)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then flush the last batch and leave the group.

        Waits for a broker (:func:`streams.kafka.wait_for_brokers`), then (without creating
        it) while the topic does not exist.

        Raises:
            BrokerUnavailable: no broker answered within ``settings.broker_wait_seconds``.
        """
        if not await kafka.wait_for_brokers(self.settings, log, stop):
            return
        while not await kafka.topic_exists(self.settings, self.topic):
            log.info("%s sink: waiting for topic %s to exist", self.writer.name, self.topic)
            try:
                await asyncio.wait_for(stop.wait(), timeout=2.0)
                return
            except TimeoutError:
                pass
        consumer = kafka.consumer(self.settings, self.group)
        self._consumer = consumer
        consumer.subscribe([self.topic], listener=_Rebalance(self))
        await consumer.start()
        try:
            batch_started: float | None = None
            max_records = self.settings.sink_batch_records
            while not stop.is_set():
                if self._assignment_due:
                    await self._take_assignment(consumer)
                fetched = await consumer.getmany(timeout_ms=100, max_records=max_records)
                async with self.adding:
                    if not self._assigned or self._assignment_due:
                        self._drop(fetched)
                        continue
                    for records in fetched.values():
                        for start in range(0, len(records), YIELD_EVERY_RECORDS):
                            for record in records[start:start + YIELD_EVERY_RECORDS]:
                                self._add(record)
                            # Let the batch being written take its next step (its statements
                            # wait for this loop): without this the write of one batch stalled
                            # for the whole decode of the next, and the sink ran at the pace of
                            # the two one after the other instead of side by side.
                            await asyncio.sleep(0)
                    await self._advance_positions(consumer, fetched)
                if self._positions and batch_started is None:
                    batch_started = time.monotonic()
                # Due by time, but the previous batch still being written: keep reading into
                # this one (it is written no later for it) until it is full, so a backlog is
                # written in fewer, larger transactions and reading never waits on a write
                # it could overlap (docs/design.md, "Sinks: batches and rows").
                due = batch_started is not None and not self._writing() and (
                    time.monotonic() - batch_started >= self.settings.sink_batch_seconds
                )
                if self._full() or due:
                    await self._hand_off()
                    batch_started = None
                await self._probe_database()
            await self.flush()
        finally:
            if self._inflight is not None and not self._inflight.done():
                self._inflight.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._inflight
            self._consumer = None
            await consumer.stop()
            await self.drop_connection()
            if self._dlq is not None:
                await self._dlq.stop()
                self._dlq = None


def refusal_reason(exc: psycopg.Error) -> str:
    """The DLQ reason of a refusal: its SQLSTATE's name in snake case (``CheckViolation`` ->
    ``check_violation``)."""
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Flush before partitions go; mark a new assignment for the poll loop to take."""

    def __init__(self, sink: PostgresSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.sink._assigned = False
        self.sink._rebalances += 1
        async with self.sink.adding:
            try:
                await asyncio.wait_for(self.sink.flush(), timeout=10)
            except (TimeoutError, DatabaseUnavailable):
                log.warning("%s sink: could not flush before a rebalance; the batch will be "
                            "re-read", self.sink.writer.name)
            self.sink.reset_batch()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # aiokafka has already made the assignment active and may hand out its records before
        # this runs: the poll loop takes the assignment (PostgresSink._take_assignment).
        self.sink._rebalances += 1
        self.sink._assignment_due = True
