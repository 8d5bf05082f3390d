"""The DLQ read back for operators: distinct dead-lettered source records by reason
(docs/design.md, Contracts)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiokafka.structs import TopicPartition

from streams import kafka
from streams.settings import Settings

log = logging.getLogger(__name__)


async def count_dlq(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Count the distinct dead-lettered source records by their ``reason`` header.

    The DLQ is at-least-once: after a worker crash a record may be dead-lettered twice, so
    records are told apart by their source position headers (topic, partition, offset).
    Reads the whole DLQ without joining a consumer group.
    """
    ends = await kafka.high_watermarks(settings, settings.dlq_topic)
    client = kafka.consumer(settings, None)
    await kafka.start(client)
    sources: dict[tuple[bytes, ...], str] = {}
    try:
        tps = [TopicPartition(settings.dlq_topic, p) for p, end in ends.items() if end > 0]
        if not tps:
            return {}
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        remaining = {tp: ends[tp.partition] for tp in tps}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while remaining and loop.time() < deadline:
            try:
                fetched = await client.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being cancelled: let it through
                # the consumer's own fetch task was cancelled under us (seen while the process
                # shut down after a burst of restarts): report what was counted
                log.warning("DLQ count cut short: the consumer was closed")
                break
            for tp, records in fetched.items():
                for r in records:
                    if r.offset < ends[tp.partition]:
                        h = dict(r.headers)
                        source = (h.get("source_topic", b""), h.get("source_partition", b""),
                                  h.get("source_offset", b""))
                        sources.setdefault(source, h.get("reason", b"?").decode())
            for tp in list(remaining):  # the position passes transaction markers too
                if await client.position(tp) >= remaining[tp]:
                    remaining.pop(tp, None)
        return dict(Counter(sources.values()))
    finally:
        await client.stop()
