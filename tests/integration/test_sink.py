"""The sink loop against a real PostgreSQL whose connection dies inside a batch transaction."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from psycopg.pq import TransactionStatus

from streams import kafka, lag
from streams.db.connect import connect
from streams.events import Limits, decode_xp, partition_for
from streams.lab.loadgen import LoadSpec, generate, publish_records
from streams.metrics import Metrics
from streams.settings import Settings
from streams.sink import PostgresSink, Rows
from streams.sink import Row as LedgerRow
from streams.xp.ledger import LedgerWriter
from tests.integration.conftest import Pipeline, metric, query_one

pytestmark = pytest.mark.integration


class DiesBeforeCommit(LedgerWriter):
    """The real ledger writer, whose connection is terminated by the server right after the
    rows are written, before the commit, on its first ``failures`` writes."""

    def __init__(self, settings: Settings, metrics: Metrics, failures: int) -> None:
        super().__init__(settings.max_record_bytes, settings.topic_partitions, metrics)
        self.url = settings.database_url
        self.failures = failures

    async def write(self, conn: psycopg.AsyncConnection, rows: list[LedgerRow]) -> None:
        await super().write(conn, rows)
        if self.failures:
            self.failures -= 1
            with connect(self.url, autocommit=True) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


def test_a_batch_whose_commit_fails_is_written_again(settings: Settings) -> None:
    records, expected = generate(LoadSpec(events=3000, students=40, seed=21,
                                          max_record_bytes=settings.max_record_bytes))
    asyncio.run(publish_records(settings, records))
    s = settings.with_(sink_batch_records=100_000, sink_batch_seconds=0.5)
    metrics = Metrics()
    writer = DiesBeforeCommit(s, metrics, failures=2)
    sink = PostgresSink(s, s.xp_topic, s.ledger_group, writer, metrics)

    async def run_until_written() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline and not task.done():
            with connect(s.database_url) as conn:
                stored = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
                                      " WHERE consumer_group = %s", (s.ledger_group,)).fetchone()
            if stored and stored[0] >= len(records):
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(run_until_written())
    assert writer.failures == 0
    assert metrics.db_errors.labels("ledger")._value.get() == 2  # noqa: SLF001
    with connect(s.database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM xp_events").fetchone()
    assert rows == (expected.valid_unique,)


class HoldsFirstWrite(LedgerWriter):
    """The real ledger writer, whose first write waits until the next batch holds every record
    of the ``total`` not in the first (at most 30 s); :attr:`taken` counts each batch's
    records."""

    def __init__(self, settings: Settings, metrics: Metrics, total: int) -> None:
        super().__init__(settings.limits(), settings.topic_partitions, metrics)
        self.total = total
        self.taken: list[int] = []
        self.holding = asyncio.Event()

    def take(self) -> Rows:
        self.taken.append(self.pending())
        return super().take()

    async def write(self, conn: psycopg.AsyncConnection, rows: Rows) -> None:
        if len(self.taken) == 1:
            self.holding.set()
            deadline = asyncio.get_running_loop().time() + 30
            while self.taken[0] + self.pending() < self.total \
                    and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await super().write(conn, rows)


def test_a_batch_due_while_the_one_before_is_written_keeps_growing(settings: Settings) -> None:
    """Under a backlog a batch due by time waits for no write: it keeps reading until the write
    before it ends, and goes as one. Before, the due batch stopped the reading until the write
    ended, and a slow write meant many small transactions (here: the first write waits for
    the second batch to hold every later record, which it never did)."""
    first, _ = generate(LoadSpec(events=100, students=20, seed=31, invalid_ratio=0.0,
                                 max_record_bytes=settings.max_record_bytes))
    rest, _ = generate(LoadSpec(events=5000, students=200, seed=32, invalid_ratio=0.0,
                                max_record_bytes=settings.max_record_bytes))
    s = settings.with_(sink_batch_records=100_000, sink_batch_seconds=0.0)  # due at once
    metrics = Metrics()
    writer = HoldsFirstWrite(s, metrics, len(first) + len(rest))
    sink = PostgresSink(s, s.xp_topic, s.ledger_group, writer, metrics)

    async def run() -> None:
        await publish_records(s, first)
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        await asyncio.wait_for(writer.holding.wait(), 60)
        for start in range(0, len(rest), 1000):  # arriving over half a second, in five parts
            await publish_records(s, rest[start:start + 1000])
            await asyncio.sleep(0.1)
        deadline = asyncio.get_running_loop().time() + 60
        while sum(writer.taken) < len(first) + len(rest) and not task.done() \
                and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(run())
    assert len(writer.taken) == 2 and sum(writer.taken) == len(first) + len(rest), writer.taken


def test_an_idle_sink_probes_the_database_and_still_commits_what_comes_next(
        settings: Settings) -> None:
    """The readiness probe of an idle sink (``SELECT 1`` every 5 s) runs in a transaction of
    its own: a bare one left a transaction open, every later batch nested in it as a
    savepoint and never committed, while its offsets went to Kafka (a chaos run found 1,312
    students without totals at lag 0)."""
    records, expected = generate(LoadSpec(events=500, students=20, seed=22,
                                          max_record_bytes=settings.max_record_bytes))
    metrics = Metrics()
    writer = LedgerWriter(settings.max_record_bytes, settings.topic_partitions, metrics)
    sink = PostgresSink(settings, settings.xp_topic, settings.ledger_group, writer, metrics)

    async def probe_then_write() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while sink.readiness() is not None and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert sink.readiness() is None, sink.readiness()
        probed = sink._db_seen  # noqa: SLF001 - the probe's own clock
        while sink._db_seen == probed and loop.time() < deadline:  # noqa: SLF001, ASYNC110
            await asyncio.sleep(0.1)  # the next probe (idle: every 5 s)
        assert sink._conn is not None  # noqa: SLF001
        assert sink._conn.info.transaction_status == TransactionStatus.IDLE  # noqa: SLF001
        await publish_records(settings, records)
        rows = 0
        while rows < expected.valid_unique and loop.time() < deadline:
            await asyncio.sleep(0.2)
            with connect(settings.database_url) as conn:  # another session: committed rows
                rows = conn.execute("SELECT count(*) FROM xp_events").fetchone()[0]  # type: ignore[index]
        stop.set()
        await task
        return rows

    assert asyncio.run(probe_then_write()) == expected.valid_unique


def test_a_row_postgresql_refuses_goes_to_the_sink_dlq_and_the_rest_commits(
        settings: Settings, tmp_path: Path) -> None:
    """PostgreSQL refuses three rows of one batch (a CHECK the worker does not know of, as a
    constraint added by a later migration or a DBA would be). Before: the sink's write failed,
    the process exited, and every restart read the same batch and failed again: the sink
    halted. Now the batch is bisected to the three records, which go to the sink DLQ with the
    database's message; the other rows and the offsets commit, the sink goes on."""
    s = settings.with_(sink_batch_records=100_000, sink_batch_seconds=0.5)
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE xp_events ADD CONSTRAINT no_777 CHECK (delta <> 777)")
    students = [str(uuid.uuid4()) for _ in range(20)]
    records = [(sid.encode(), orjson.dumps({
        "id": str(uuid.uuid4()), "student_id": sid, "kind": "quiz",
        "delta": 777 if n in (13, 101, 187) else n % 50 + 1,
        "created_at": "2026-11-20T10:00:00Z"})) for n, sid in enumerate(students * 10)]
    asyncio.run(publish_records(s, records))
    pipeline = Pipeline(s, tmp_path)
    try:
        pipeline.start("sink")

        def alive(_: dict[str, int]) -> None:
            assert pipeline.procs["sink"].alive(), pipeline.logs("sink")
        asyncio.run(lag.wait_caught_up(s, [(s.ledger_group, s.xp_topic)], 90, alive, 0.5))
        assert query_one(s.database_url, "SELECT count(*), count(*) FILTER (WHERE delta = 777) "
                         "FROM xp_events") == (197, 0)

        async def dlq() -> list[dict[str, bytes]]:
            return [dict(r.headers) async for r in kafka.read_to_end(s, s.sink_dlq_topic)]
        refused = asyncio.run(dlq())
        assert sorted((h["reason"], h["sink"]) for h in refused) == \
            [(b"check_violation", b"ledger")] * 3
        assert all(b"no_777" in h["detail"] for h in refused)
        assert metric(pipeline.procs["sink"].metrics_port,
                      'xp_sink_refused_total{reason="check_violation",sink="ledger"}') == 3
        assert pipeline.procs["sink"].alive()
    finally:
        pipeline.stop()


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """A ``created_at`` in any form the event schema's pattern allows: ``T``/``t``, ``Z``/``z``
    or an offset up to +-15:59 (``streams.events.MAX_UTC_OFFSET``), none to six fractional
    digits, years 1 to 9999."""
    dt = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    digits = draw(st.integers(0, 6))
    fraction = f".{dt.microsecond:06d}"[:digits + 1] if digits else ""
    offset = draw(st.integers(-(15 * 60 + 59), 15 * 60 + 59) | st.just(0))
    zone = (draw(st.sampled_from("Zz")) if offset == 0 and draw(st.booleans())
            else f"{'+' if offset >= 0 else '-'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}")
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}{draw(st.sampled_from('Tt'))}"
            f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}{fraction}{zone}")


def epoch_us(value: datetime) -> int:
    """Microseconds since the epoch of an aware ``value``, exactly (years 1 to 9999 at any
    offset: no float, no datetime outside Python's range)."""
    offset = value.utcoffset()
    assert offset is not None
    naive = value.replace(tzinfo=None) - datetime(1970, 1, 1)
    return (naive - offset) // timedelta(microseconds=1)


def test_postgresql_reads_the_ledger_rows_times_as_the_instants_the_worker_folded(
        settings: Settings) -> None:
    """The ledger row carries ``created_at`` as the event's own text and ``record_ts`` as ISO
    text (psycopg's datetime formatting was a fifth of the sink's CPU a row). For every form the
    schema allows, PostgreSQL must store the instant Python parsed (the worker folds that one):
    same microsecond, same millisecond, at any offset, early and late years included."""
    limits = Limits(past_seconds=1e12, future_seconds=1e12)

    @hyp_settings(max_examples=8, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(texts=st.lists(rfc3339(), min_size=1, max_size=150),
           stamps=st.lists(st.integers(0, 253_402_300_799_999), min_size=150, max_size=150))
    def check(texts: list[str], stamps: list[int]) -> None:
        writer = LedgerWriter(limits, settings.topic_partitions, Metrics())
        student = "0b7e4c1a-5d2f-4e3b-8a9c-1d2e3f4a5b6c"
        part = partition_for(student.encode(), settings.topic_partitions)
        folded = {}
        for n, (text, stamp) in enumerate(zip(texts, stamps, strict=False)):
            value = orjson.dumps({"id": str(uuid.UUID(int=n + 1, version=4)),
                                  "student_id": student, "kind": "quiz", "delta": 1,
                                  "created_at": text})
            rec = ConsumerRecord(settings.xp_topic, part, n, stamp, 0, student.encode(), value,
                                 None, len(student), len(value), ())
            ev = decode_xp(rec.key, rec.value, limits)
            folded[ev.id] = (epoch_us(ev.created_at), stamp)
            writer.add(rec)
        rows = writer.take()
        assert len(rows) == len(texts)

        async def write_and_read() -> list[tuple[str, int, int]]:
            async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
                await writer.write(conn, rows)
                cur = await conn.execute(
                    "SELECT id::text, (extract(epoch FROM created_at) * 1000000)::bigint, "
                    "(extract(epoch FROM record_ts) * 1000)::bigint FROM xp_events")
                stored = await cur.fetchall()
                await conn.rollback()
                return stored

        stored = {eid: (created, stamp) for eid, created, stamp in asyncio.run(write_and_read())}
        assert stored == folded

    check()


def test_records_handed_out_before_the_assignment_is_taken_are_read_again_from_its_offsets(
        settings: Settings) -> None:
    """aiokafka hands out records of a new assignment before its rebalance listener has run.
    The sink used to add them while its offsets were still loading, without taking the
    consumer's position after them: each partition's offset stayed at its last record + 1,
    short of the commit marker after it, and the lag at 1 per partition for good (a totals
    writer started after the worker had finished). Here the offsets query waits on a lock
    while the broker's answer arrives: nothing may be taken before the offsets are known, and
    the offsets stored must reach the partitions' ends, markers included."""
    records, _ = generate(LoadSpec(events=400, students=40, seed=23, invalid_ratio=0.0,
                                   max_record_bytes=settings.max_record_bytes))
    metrics = Metrics()
    writer = LedgerWriter(settings.max_record_bytes, settings.topic_partitions, metrics)
    sink = PostgresSink(settings, settings.xp_topic, settings.ledger_group, writer, metrics)
    tps = [TopicPartition(settings.xp_topic, p) for p in range(settings.topic_partitions)]

    def stored() -> dict[int, int]:
        with connect(settings.database_url) as conn:
            return dict(conn.execute(  # type: ignore[arg-type]
                "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = %s",
                (settings.ledger_group,)).fetchall())

    async def run() -> tuple[int, dict[int, int], dict[int, int], dict[int, int | None]]:
        producer = kafka.producer(settings, transactional_id=f"{settings.xp_topic}-tx",
                                  enable_idempotence=True)
        await producer.start()
        try:  # one transaction: every partition ends with a commit marker
            await producer.begin_transaction()
            for key, value in records:
                await producer.send(settings.xp_topic, value, key=key)
            await producer.commit_transaction()
        finally:
            await producer.stop()
        ends = await kafka.high_watermarks(settings, settings.xp_topic)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        stop = asyncio.Event()
        with connect(settings.database_url) as locker:
            locker.execute("LOCK TABLE consumer_offsets IN ACCESS EXCLUSIVE MODE")
            task = asyncio.create_task(sink.run(stop))

            def answered() -> bool:  # the broker answered a fetch of every partition
                c = sink._consumer  # noqa: SLF001
                return c is not None and c.assignment() == set(tps) and all(
                    c.highwater(tp) is not None for tp in tps)
            while not answered() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert answered(), "no fetch answered"
            grace = loop.time() + 1.0  # records taken early would be added by now
            while writer.pending() == 0 and loop.time() < grace:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            taken_early = writer.pending()
        while stored() != ends and not task.done() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        async with kafka.OffsetReader(settings) as reader:
            committed = await reader.committed(settings.ledger_group, settings.xp_topic)
        stop.set()
        await task
        return taken_early, ends, stored(), committed

    taken_early, ends, offsets, committed = asyncio.run(run())
    assert taken_early == 0, "records were taken before their partitions' offsets were known"
    assert offsets == ends, f"offsets in PostgreSQL {offsets}, partition ends {ends}"
    assert committed == ends, f"offsets in Kafka {committed}, partition ends {ends}"
