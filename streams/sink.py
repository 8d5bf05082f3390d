"""The PostgreSQL sink loop shared by the ledger sink and the totals writer.

One consumer group reads a topic; records are collected with ``writer.add()`` and written with
``writer.flush()`` in one transaction together with the consumed offsets (table
``consumer_offsets``), so the database holds exactly what it says it has read, across crashes
and rebalances (STYLE.md: "Storing Offsets Outside Kafka"). The steps, in order:

    poll -> add (decode, validate) -> batch full? -> flush rows + offsets in one transaction
         -> commit offsets to Kafka (for lag monitoring only)

A partition assigned to this process starts at the offset stored in PostgreSQL. A database
error pauses the loop: the same batch is retried with exponential backoff until it commits
(DESIGN.md guarantee 6); nothing is read meanwhile, so memory stays bounded by one batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from streams import kafka
from streams.db.connect import aconnect, mapped_errors
from streams.db.queries import query
from streams.errors import DatabaseUnavailable
from streams.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)


class BatchWriter(Protocol):
    """What a sink writes: collects records, then writes them in the caller's transaction."""

    name: str
    """Sink name for metrics and logs (``ledger``, ``totals``)."""

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Take one record (may skip it, e.g. an invalid one)."""

    def pending(self) -> int:
        """Records added since the last flush."""

    async def flush(self, conn: psycopg.AsyncConnection) -> None:
        """Write everything added, inside the open transaction of ``conn``. Must keep it: the
        transaction may still fail to commit, and then the same batch is written again."""

    def discard(self) -> None:
        """Forget everything added (the batch will be read again)."""


class PostgresSink:
    """Runs one :class:`BatchWriter` over one topic in one consumer group."""

    def __init__(
        self, settings: Settings, topic: str, group: str, writer: BatchWriter, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self.writer = writer
        self.metrics = metrics
        self._positions: dict[int, int] = {}  # partition -> next offset, of the pending batch
        self._bytes = 0
        self._conn: psycopg.AsyncConnection | None = None
        self._consumer: AIOKafkaConsumer | None = None
        # One database operation at a time on the one connection: aiokafka runs the rebalance
        # listener in its own task, which flushes and loads offsets while the poll loop may be
        # flushing (two transactions at once nest, and psycopg then refuses the commit).
        self._db_lock = asyncio.Lock()

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
                except DatabaseUnavailable:
                    self.metrics.db_errors.labels(self.writer.name).inc()
                    await self.drop_connection()
                    raise

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
        """Write the pending batch and its offsets in one transaction, then commit to Kafka.

        Serialised by a lock: the poll loop and the rebalance listener both call it. A flush
        cancelled midway (the listener's timeout) drops the connection, whose transaction state
        is then unknown; the batch is re-read from the offsets in PostgreSQL."""
        async with self._db_lock:
            try:
                await self._flush()
            except asyncio.CancelledError:
                await self.drop_connection()
                raise

    async def _flush(self) -> None:
        if not self._positions:
            return
        records = self.writer.pending()
        started = time.monotonic()

        async def op() -> None:
            conn = await self._connection()
            with mapped_errors(self.settings.database_url):
                async with conn.transaction():
                    await self.writer.flush(conn)
                    parts = sorted(self._positions)
                    await conn.execute(query("store_offsets"), {
                        "group": self.group, "topic": self.topic, "partitions": parts,
                        "offsets": [self._positions[p] for p in parts],
                    })

        await self._with_retries("writing a batch", op)
        self.metrics.sink_batch_records.labels(self.writer.name).observe(records)
        self.metrics.sink_batch_seconds.labels(self.writer.name).observe(time.monotonic() - started)
        self.metrics.last_commit.labels(self.writer.name).set_to_current_time()
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "")
                   for p, o in self._positions.items()}
        self.reset_batch()
        if self._consumer is not None:
            try:  # for lag monitoring only: PostgreSQL holds the offsets that count
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                log.info("%s sink: Kafka commit skipped (%s)", self.writer.name, exc)

    def reset_batch(self) -> None:
        """Forget the pending batch (after a commit, or when its partitions are revoked)."""
        self.writer.discard()
        self._positions.clear()
        self._bytes = 0

    def _add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.writer.add(record)
        self._positions[record.partition] = record.offset + 1
        self._bytes += len(record.value or b"")

    def _full(self) -> bool:
        return (self.writer.pending() >= self.settings.sink_batch_records
                or self._bytes >= self.settings.sink_batch_bytes)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then flush the last batch and leave the group.

        Waits (without creating it) while the topic does not exist.
        """
        while not await kafka.topic_exists(self.settings, self.topic):
            log.info("%s sink: waiting for topic %s to exist", self.writer.name, self.topic)
            try:
                await asyncio.wait_for(stop.wait(), timeout=2.0)
                return
            except TimeoutError:
                pass
        consumer = kafka.consumer(self.settings, self.group)
        self._consumer = consumer
        consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
        await consumer.start()
        try:
            batch_started: float | None = None
            max_records = self.settings.sink_batch_records
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=100, max_records=max_records)
                for records in fetched.values():
                    for record in records:
                        self._add(record)
                if self._positions and batch_started is None:
                    batch_started = time.monotonic()
                due = batch_started is not None and (
                    time.monotonic() - batch_started >= self.settings.sink_batch_seconds
                )
                if self._full() or due:
                    await self.flush()
                    batch_started = None
            await self.flush()
        finally:
            self._consumer = None
            await consumer.stop()
            await self.drop_connection()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Flush before partitions go; start assigned partitions at the offsets in PostgreSQL."""

    def __init__(self, sink: PostgresSink, consumer: AIOKafkaConsumer) -> None:
        self.sink = sink
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await asyncio.wait_for(self.sink.flush(), timeout=10)
        except (TimeoutError, DatabaseUnavailable):
            log.warning("%s sink: could not flush before a rebalance; the batch will be re-read",
                        self.sink.writer.name)
        self.sink.reset_batch()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        stored = await self.sink.load_offsets()
        for tp in assigned:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
        log.info("%s sink: assigned %s, resuming at %s", self.sink.writer.name,
                 sorted(tp.partition for tp in assigned),
                 {tp.partition: stored.get(tp.partition, "earliest") for tp in assigned})
