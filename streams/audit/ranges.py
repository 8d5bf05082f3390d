"""Read ranges of a topic for audits: times and offsets given on the command line, resolved to
offsets per partition, and what the topic's retention has already dropped.

Used by ``streams replay``. Nothing here joins a consumer group or commits an offset.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams.events import parse_timestamp
from streams.kafka import OffsetReader

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Parse a duration such as ``90s``, ``30m``, ``24h``, ``7d``, ``2w`` (or plain seconds)
    into seconds.

    Raises:
        ValueError: not a duration, with a one-line message.
    """
    m = _RELATIVE.match(text.strip())
    if m:
        return float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (90s, 30m, 24h, 7d)") from None


def parse_instant(text: str, now: float | None = None) -> float:
    """Parse an RFC 3339 timestamp with offset, or a duration ago (``90s``, ``30m``, ``24h``,
    ``7d``, ``2w``), into seconds since the Unix epoch.

    Raises:
        ValueError: neither form, with a one-line message.
    """
    if _RELATIVE.match(text.strip()):
        return (time.time() if now is None else now) - parse_duration(text)
    try:
        return parse_timestamp(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is neither RFC 3339 with an offset "
                         "(2026-11-20T10:00:00Z) nor a duration ago (90s, 30m, 24h, 7d)") from None


def parse_offsets(items: tuple[str, ...] | list[str]) -> dict[int, int]:
    """Parse ``PARTITION:OFFSET`` items (``0:120``) into ``{partition: offset}``.

    Raises:
        ValueError: an item is not two non-negative integers joined by ``:``.
    """
    result: dict[int, int] = {}
    for item in items:
        for part in item.split(","):
            p, sep, o = part.strip().partition(":")
            if not sep or not p.isdigit() or not o.isdigit():
                raise ValueError(f"{part!r} is not PARTITION:OFFSET (e.g. 0:120)")
            result[int(p)] = int(o)
    return result


@dataclass
class PartitionRange:
    """The offsets of one partition an audit reads: ``[start, end)``.

    ``log_start`` is the partition's first offset still on the broker; when the requested range
    began before it (retention deleted those records), ``dropped`` is True and the audit covers
    only ``[start, end)`` with ``start = log_start``.
    """

    partition: int
    start: int
    end: int
    log_start: int
    dropped: bool = False
    stopped_at: int | None = None
    """Where reading stopped (offset after the last record read); set by the scan."""

    @property
    def read_end(self) -> int:
        """Offset after the last record the scan covered."""
        return self.end if self.stopped_at is None else self.stopped_at


@dataclass
class RangeSpec:
    """What was asked: a time window (seconds since the epoch) and/or offsets per partition."""

    since: float | None = None
    until: float | None = None
    from_offsets: dict[int, int] | None = None
    to_offsets: dict[int, int] | None = None

    def describe(self) -> str:
        """One line for reports."""
        parts = []
        if self.since is not None:
            parts.append(f"since {_iso(self.since)}")
        if self.until is not None:
            parts.append(f"until {_iso(self.until)}")
        for word, offsets in (("from", self.from_offsets), ("to", self.to_offsets)):
            if offsets:
                parts.append(f"{word} " + ",".join(f"{p}:{o}" for p, o in sorted(offsets.items())))
        return ", ".join(parts) or "the whole topic"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


async def resolve(
    client: AIOKafkaConsumer, reader: OffsetReader, topic: str, spec: RangeSpec
) -> list[PartitionRange]:
    """Resolve ``spec`` into one :class:`PartitionRange` per partition of ``topic``.

    A time bound is looked up with ListOffsets by timestamp; a broker that answers without a
    real timestamp (offset 0, timestamp -1) is treated as unsure and the range
    starts at the log start, the scan then skipping records older than ``since``. The end is
    the high watermark when the replay starts, so a replay of a live topic ends.

    Raises:
        LookupError: the topic does not exist.
        ValueError: an offset names a partition the topic does not have.
    """
    partitions = await reader.partitions(topic)
    for given in (spec.from_offsets or {}, spec.to_offsets or {}):
        unknown = sorted(set(given) - set(partitions))
        if unknown:
            raise ValueError(f"topic {topic!r} has no partition {unknown[0]} "
                             f"(it has {len(partitions)})")
    tps = [TopicPartition(topic, p) for p in partitions]
    log_starts = {tp.partition: o for tp, o in (await client.beginning_offsets(tps)).items()}
    ends = await reader.high_watermarks(topic)
    starts = dict(log_starts)
    if spec.since is not None:
        found = await client.offsets_for_times({tp: int(spec.since * 1000) for tp in tps})
        for tp, hit in found.items():
            if hit is None:
                starts[tp.partition] = ends[tp.partition]  # nothing at or after since
            elif hit.timestamp >= 0:
                starts[tp.partition] = max(hit.offset, log_starts[tp.partition])
    requested = dict(spec.from_offsets or {})
    for p, o in requested.items():
        starts[p] = max(starts[p], o)
    first_ts = await reader.timestamps_at(
        topic, {p: s for p, s in log_starts.items() if s > 0 and s < ends[p]})
    ranges = []
    for p in partitions:
        start, end = max(starts[p], log_starts[p]), ends[p]
        if spec.to_offsets and p in spec.to_offsets:
            end = min(end, spec.to_offsets[p])
        dropped = retention_dropped(requested.get(p), spec.since, log_starts[p], first_ts.get(p))
        ranges.append(PartitionRange(p, min(start, end), end, log_starts[p], dropped))
    return ranges


def retention_dropped(requested: int | None, since: float | None, log_start: int,
                      first_timestamp: float | None) -> bool:
    """True when records the range asked for are gone from a partition (retention).

    Args:
        requested: the start offset asked for, if any.
        since: the start time asked for (seconds since the epoch), if any.
        log_start: the partition's first offset still on the broker.
        first_timestamp: that record's timestamp (seconds), None when unknown or empty.
    """
    if requested is not None:
        return requested < log_start
    if since is not None:
        # Records before the log start are gone; some of them may have been in the window.
        return log_start > 0 and (first_timestamp is None or first_timestamp > since)
    return log_start > 0
