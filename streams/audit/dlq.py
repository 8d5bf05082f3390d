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


async def count_dlq(settings: Settings, timeout_s: float = 10.0,
                    topic: str | None = None) -> dict[str, int]:
    """Count the distinct dead-lettered source records by their ``reason`` header.

    The DLQ is at-least-once: after a worker crash a record may be dead-lettered twice, so
    records are told apart by their source position headers (topic, partition, offset).
    Reads the whole DLQ without joining a consumer group.

    Args:
        topic: the DLQ topic to read (default the XP topic's, ``settings.dlq_topic``).
    """
    return dict(Counter((await dlq_sources(settings, timeout_s, topic)).values()))


async def dlq_sources(settings: Settings, timeout_s: float = 10.0, topic: str | None = None
                      ) -> dict[tuple[str, int, int], str]:
    """Every dead-lettered source record of the DLQ ``topic`` (default ``settings.dlq_topic``)
    as (source topic, partition, offset) -> reason (the first DLQ record's, when a crash
    dead-lettered it twice); a record without source headers is (``""``, -1, -1)."""
    dlq = settings.dlq_topic if topic is None else topic
    ends = await kafka.high_watermarks(settings, dlq)
    client = kafka.consumer(settings, None)
    await kafka.start(client)
    sources: dict[tuple[str, int, int], str] = {}
    try:
        tps = [TopicPartition(dlq, p) for p, end in ends.items() if end > 0]
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
                        source = (h.get("source_topic", b"").decode(errors="replace"),
                                  int(h.get("source_partition", b"-1")),
                                  int(h.get("source_offset", b"-1")))
                        sources.setdefault(source, h.get("reason", b"?").decode())
            for tp in list(remaining):  # the position passes transaction markers too
                if await client.position(tp) >= remaining[tp]:
                    remaining.pop(tp, None)
        return sources
    finally:
        await client.stop()
