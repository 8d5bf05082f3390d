"""Consumer lag: the one computation (docs/design.md, Operations).

Lag of a consumer group on a partition is the high watermark (offset after the last record)
minus the group's committed offset, in records, and the age of the oldest record not yet
committed, in seconds. It is read from the broker (:class:`streams.kafka.OffsetReader`) without
joining the group, so it stays right while the group rebalances or its consumers are down.
``streams monitor``, ``streams status``, reconciliation, the demo, the bench and the tests all
use the functions here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from streams import kafka
from streams.settings import Settings


@dataclass(frozen=True)
class PartitionLag:
    """One consumer group's position on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    """The committed offset (None: the group never committed here)."""
    high_watermark: int
    """Offset after the last record."""
    lag_records: int
    """high_watermark minus committed (records)."""
    lag_seconds: float
    """Age of the oldest uncommitted record (seconds); 0 when caught up."""

    def to_dict(self) -> dict[str, object]:
        """As a JSON-ready dict."""
        return asdict(self)


def records_behind(ends: Mapping[int, int],
                   committed: Mapping[int, int | None]) -> dict[int, int]:
    """Per partition, records between the committed offset (none: 0) and the high watermark;
    never negative. Pure."""
    return {p: max(0, end - (committed.get(p) or 0)) for p, end in ends.items()}


async def read_lag(reader: kafka.OffsetReader, group: str, topic: str) -> list[PartitionLag]:
    """Read one group's lag on one topic from the broker, per partition in order.

    Raises:
        LookupError: the topic does not exist.
    """
    ends = await reader.high_watermarks(topic)
    committed = await reader.committed(group, topic)
    behind = records_behind(ends, committed)
    stamps = await reader.timestamps_at(
        topic, {p: committed.get(p) or 0 for p, n in behind.items() if n > 0})
    now = time.time()
    return [
        PartitionLag(group, topic, p, committed.get(p), end, behind[p],
                     max(0.0, now - stamps[p]) if p in stamps else 0.0)
        for p, end in sorted(ends.items())
    ]


async def wait_caught_up(
    settings: Settings, group_topics: list[tuple[str, str]], timeout_s: float,
    on_progress: Callable[[dict[str, int]], None] | None = None, interval_s: float = 1.0,
) -> dict[str, tuple[float, float]]:
    """Poll until every (group, topic) has total lag 0 (records), or raise ``TimeoutError``.

    ``on_progress`` gets the records behind per group (summed over its topics) after each poll
    (-1: a topic not there yet, e.g. a changelog before its first write); polls are
    ``interval_s`` seconds apart.

    Returns:
        Per group, seconds from the call to (its first committed offset, lag 0 first seen on
        its last topic): the span over which it did its work, for throughput figures.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    first: dict[tuple[str, str], float] = {}
    done: dict[tuple[str, str], tuple[float, float]] = {}
    async with kafka.OffsetReader(settings) as reader:
        while True:
            lags: dict[str, int] = {}
            for pair in group_topics:
                group, topic = pair
                if pair in done:
                    continue
                if not await kafka.topic_exists(settings, topic):
                    lags[group] = -1
                    continue
                ends = await reader.high_watermarks(topic)
                committed = await reader.committed(group, topic)
                now = loop.time() - started
                if any(committed.values()):
                    first.setdefault(pair, now)
                behind = sum(records_behind(ends, committed).values())
                if lags.get(group, 0) >= 0:
                    lags[group] = lags.get(group, 0) + behind
                if behind == 0 and sum(ends.values()) > 0:
                    done[pair] = (first.get(pair, now), now)
            if on_progress is not None:
                on_progress(lags)
            if len(done) == len(set(group_topics)):
                spans: dict[str, tuple[float, float]] = {}
                for (group, _topic), (a, b) in done.items():
                    old = spans.get(group, (a, b))
                    spans[group] = (min(a, old[0]), max(b, old[1]))
                return spans
            if loop.time() - started > timeout_s:
                raise TimeoutError(f"consumer lag not 0 after {timeout_s} s: {lags}")
            await asyncio.sleep(interval_s)


async def wait_past(settings: Settings, stages: list[tuple[list[str], str]],
                    timeout_s: float) -> bool:
    """Wait until, for each (groups, topic) in ``stages`` taken in order, every group has
    committed past that topic's high watermarks as read when its turn comes (a watermark: what
    was published before the call is done, later traffic does not matter).

    Returns:
        False when that did not happen within ``timeout_s`` seconds (polled every 0.5 s).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with kafka.OffsetReader(settings) as reader:
        for groups, topic in stages:
            ends = await reader.high_watermarks(topic)
            while True:
                behind = False
                for group in groups:
                    committed = await reader.committed(group, topic)
                    behind |= any(records_behind(ends, committed).values())
                if not behind:
                    break
                if loop.time() > deadline:
                    return False
                await asyncio.sleep(0.5)
    return True
