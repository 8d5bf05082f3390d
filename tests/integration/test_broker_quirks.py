"""The Tansu workarounds (docs/design.md, "Local stack") give the right answer on Tansu and
change nothing on Apache Kafka, which answers right by itself."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.structs import TopicPartition

from streams import kafka
from streams.audit.ranges import RangeSpec, resolve
from streams.settings import Settings

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


async def _listoffsets_latest(s: Settings, topic: str) -> int:
    """The broker's own ListOffsets(latest) for partition 0, uncorrected."""
    client = kafka.consumer(s, None)
    await client.start()
    try:
        tp = TopicPartition(topic, 0)
        return int((await client.end_offsets([tp]))[tp])
    finally:
        await client.stop()


@pytest.mark.both_brokers
def test_high_watermark_correction_is_exact_and_a_no_op_on_kafka(settings: Settings,
                                                                  broker: str) -> None:
    """OffsetReader.high_watermarks corrects ListOffsets(latest) with one fetch (Tansu answers
    the base offset of the last record batch); on Apache Kafka ListOffsets is already the
    end, so the correction finds nothing past it."""
    topic = f"{settings.xp_topic}-quirk-hw"
    published = asyncio.run(_publish(settings, topic, [5, 7, 3]))
    corrected = asyncio.run(kafka.high_watermarks(settings, topic))
    assert corrected == {0: published}
    raw = asyncio.run(_listoffsets_latest(settings, topic))
    if broker == "kafka":
        assert raw == published  # the workaround had nothing to correct
    else:
        assert raw <= published


@pytest.mark.both_brokers
def test_time_range_start_is_exact_on_kafka(settings: Settings, broker: str) -> None:
    """A replay's start time is looked up with ListOffsets by timestamp. Apache Kafka answers
    the first record at or after it, so the range starts there; Tansu answers without a
    timestamp, so the range starts at the log start and the scan skips older records."""
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

    if broker == "kafka":
        assert asyncio.run(start()) == 4
    else:
        assert asyncio.run(start()) in (0, 4)
