"""What transactions do to offsets, on Apache Kafka (docs/design.md, "Fold worker:
checkpoints"): a marker takes an offset, an aborted record is never read, and the ends the
pipeline measures against account for both."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.structs import TopicPartition

from streams import kafka
from streams.audit.ranges import RangeSpec, resolve
from streams.settings import Settings

pytestmark = pytest.mark.integration

T0_MS = 1_700_000_000_000
"""The first record's timestamp (milliseconds since the epoch); record i is T0_MS + i s."""


async def _publish(s: Settings, topic: str, batches: list[int]) -> int:
    """Publish ``batches`` (record counts) to partition 0 of ``topic``, one producer batch
    each, with timestamps one second apart. Returns the records published."""
    await kafka.ensure_topics(s, [topic], partitions=1)
    producer = kafka.producer(s)
    await producer.start()
    n = 0
    try:
        for size in batches:
            futures = [await producer.send(topic, f"r{n + i}".encode(), partition=0,
                                           timestamp_ms=T0_MS + (n + i) * 1000)
                       for i in range(size)]
            await asyncio.gather(*futures)
            n += size
    finally:
        await producer.stop()
    return n


async def _transactions(s: Settings, topic: str, committed: int, aborted: int) -> None:
    """``committed`` records in a committed transaction, then ``aborted`` in an aborted one,
    to partition 0 of ``topic``."""
    await kafka.ensure_topics(s, [topic], partitions=1)
    producer = kafka.producer(s, transactional_id=f"{topic}-quirk", enable_idempotence=True)
    await producer.start()
    try:
        for count, commit in ((committed, True), (aborted, False)):
            await producer.begin_transaction()
            for i in range(count):
                await producer.send_and_wait(topic, f"t{i}".encode(), partition=0)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


async def _read_all(s: Settings, topic: str) -> tuple[list[int], int]:
    """(offsets of the records a read-committed consumer is given, its position after)."""
    client = kafka.consumer(s, None)
    await client.start()
    try:
        tp = TopicPartition(topic, 0)
        client.assign([tp])
        await client.seek_to_beginning(tp)
        offsets: list[int] = []
        end = (await client.end_offsets([tp]))[tp]
        while await client.position(tp) < end:
            batch = await client.getmany(tp, timeout_ms=500)
            offsets += [r.offset for r in batch.get(tp, [])]
        return offsets, await client.position(tp)
    finally:
        await client.stop()


def test_ends_account_for_transaction_markers_and_aborted_records(settings: Settings) -> None:
    """5 committed records (offsets 0-4, commit marker 5), 3 aborted ones (6-8, abort marker
    9): a read-committed consumer is given offsets 0-4 and its position ends at 10, the end
    lag is measured against (so a group caught up reads lag 0); the end Faust's recovery is
    told is 5, the offset after the last committed record (else it would wait for ever)."""
    topic = f"{settings.xp_topic}-quirk-txn"
    asyncio.run(_transactions(settings, topic, committed=5, aborted=3))
    assert asyncio.run(kafka.high_watermarks(settings, topic)) == {0: 10}
    assert asyncio.run(_read_all(settings, topic)) == ([0, 1, 2, 3, 4], 10)

    async def last_records(name: str) -> dict[int, int]:
        async with kafka.OffsetReader(settings) as reader:
            return await reader.last_records(name)

    assert asyncio.run(last_records(topic)) == {0: 5}
    empty = f"{settings.xp_topic}-quirk-aborted"  # only an aborted transaction: no record
    asyncio.run(_transactions(settings, empty, committed=0, aborted=2))
    assert asyncio.run(kafka.high_watermarks(settings, empty)) == {0: 3}
    assert asyncio.run(last_records(empty)) == {0: 0}


def test_time_range_start_is_exact(settings: Settings) -> None:
    """A replay's start time is looked up with ListOffsets by timestamp: Apache Kafka answers
    the first record at or after it, so the range starts there."""
    topic = f"{settings.xp_topic}-quirk-ts"
    asyncio.run(_publish(settings, topic, [10]))
    since_s = (T0_MS + 4 * 1000) / 1000  # record 4's timestamp

    async def start() -> int:
        client = kafka.consumer(settings, None)
        await client.start()
        try:
            async with kafka.OffsetReader(settings) as reader:
                ranges = await resolve(client, reader, topic, RangeSpec(since=since_s))
        finally:
            await client.stop()
        assert [r.end for r in ranges] == [10]
        return ranges[0].start

    assert asyncio.run(start()) == 4


def test_a_consumer_let_go_of_its_partitions_closes_at_once(settings: Settings) -> None:
    """``kafka.let_go`` then ``stop()``, fetches in flight, twenty times: every stop returns.
    With ``assign([])`` in place of ``let_go`` (what the standby applier did first, and the
    batch reader on a revoke), aiokafka's fetcher swallowed the stop's cancellation while it
    awaited the old assignment's fetches, and ``stop()`` never returned: a worker hung on
    SIGTERM until it was killed."""
    topic = f"{settings.xp_topic}-letgo"

    async def run() -> None:
        await _publish(settings, topic, [50])
        for _ in range(20):
            consumer = kafka.consumer(settings, None, fetch_max_wait_ms=500)
            await consumer.start()
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.getmany(timeout_ms=2000)  # the next fetch is now in flight
            kafka.let_go(consumer)
            stopping = asyncio.ensure_future(consumer.stop())
            done, _ = await asyncio.wait([stopping], timeout=10)
            assert stopping in done, "consumer.stop() did not return within 10 s"

    asyncio.run(run())
