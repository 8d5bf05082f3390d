"""The DLQ read back for operators (docs/design.md, "Contracts"): distinct dead-lettered
source records by reason (:func:`count_dlq`), the records themselves with their headers and
decoded payloads (:func:`read_dlq`, :func:`summarize`; ``streams dlq list`` and ``show``), and
selected records sent back to their source topic, as they were or corrected (:func:`replay`;
``streams dlq replay``)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
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


DLQ_TOPICS = {"xp": "dlq_topic", "actions": "action_dlq_topic", "claims": "claims_dlq_topic",
              "sinks": "sink_dlq_topic"}
"""``--topic`` choice -> the Settings property naming that DLQ topic."""


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record as an operator sees it: where it sits, what it was, why it is here."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    """When it was dead-lettered (the DLQ record's time, milliseconds since the epoch)."""
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    """``reason``, ``detail``, ``source_topic``, ``source_partition``, ``source_offset`` (and
    ``value_cut_from``/``key_cut_from`` when cut, ``sink`` for the sinks' DLQ)."""

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "?")

    @property
    def source(self) -> tuple[str, int, int]:
        """(source topic, partition, offset); ("", -1, -1) without source headers."""
        h = self.headers
        return (h.get("source_topic", ""), int(h.get("source_partition", "-1")),
                int(h.get("source_offset", "-1")))

    @property
    def replayable(self) -> bool:
        """Its key and value are the original bytes (not cut) and its source is known."""
        return ("value_cut_from" not in self.headers and "key_cut_from" not in self.headers
                and self.source[0] != "")

    def to_dict(self) -> dict[str, object]:
        """As JSON: the value decoded as JSON when it is JSON, else as text (invalid UTF-8
        replaced), the key as text."""
        value: object = None
        if self.value is not None:
            try:
                value = orjson.loads(self.value)
            except orjson.JSONDecodeError:
                value = self.value.decode("utf-8", "replace")
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "dead_lettered_at": datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
                .isoformat(timespec="seconds"),
                "key": None if self.key is None else self.key.decode("utf-8", "replace"),
                "headers": self.headers, "value": value}


@dataclass(frozen=True)
class Selection:
    """Which DLQ records ``show`` and ``replay`` take (every given condition holds)."""

    reason: str | None = None
    source_partition: int | None = None
    from_offset: int | None = None
    """Source offsets from this one (inclusive)."""
    to_offset: int | None = None
    """... up to this one (inclusive)."""
    since_ms: int | None = None
    """Dead-lettered at or after this time (milliseconds since the epoch)."""
    limit: int | None = None

    def matches(self, d: DeadLetter) -> bool:
        _, partition, offset = d.source
        return ((self.reason is None or d.reason == self.reason)
                and (self.source_partition is None or partition == self.source_partition)
                and (self.from_offset is None or offset >= self.from_offset)
                and (self.to_offset is None or offset <= self.to_offset)
                and (self.since_ms is None or d.timestamp_ms >= self.since_ms))


async def read_dlq(settings: Settings, topic: str, selection: Selection = Selection(),
                   on_progress: Callable[[int, int], None] | None = None) -> list[DeadLetter]:
    """The DLQ records of ``topic`` that ``selection`` takes, each source record once (the
    first DLQ record of it: a worker crash can dead-letter a record twice), in DLQ order.

    Raises:
        LookupError: the topic does not exist.
        KafkaError: the brokers cannot be reached.
    """
    out: list[DeadLetter] = []
    seen: set[tuple[str, int, int]] = set()
    async for r in kafka.read_to_end(settings, topic, on_progress):
        d = DeadLetter(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                       {k: v.decode("utf-8", "replace") for k, v in r.headers})
        if d.source in seen and d.source[0]:
            continue
        seen.add(d.source)
        if selection.matches(d):
            out.append(d)
            if selection.limit is not None and len(out) >= selection.limit:
                break
    return out


def summarize(letters: list[DeadLetter]) -> list[tuple[str, str, int, str, int]]:
    """(DLQ topic, reason, source partition, hour dead-lettered (UTC, ``2026-12-05T07``),
    records), most records first."""
    counts: Counter[tuple[str, str, int, str]] = Counter(
        (d.topic, d.reason, d.source[1],
         datetime.fromtimestamp(d.timestamp_ms / 1000, UTC).strftime("%Y-%m-%dT%H"))
        for d in letters)
    return [(*k, n) for k, n in counts.most_common()]


@dataclass
class ReplayResult:
    """What ``replay`` sent (or would send, ``dry_run``) and what it could not."""

    sent: dict[tuple[str, int], int] = field(default_factory=dict)
    """(source topic, partition) -> records sent there."""
    not_replayable: list[tuple[str, int, int]] = field(default_factory=list)
    """Source positions of records whose bytes were cut or whose source is unknown (and no
    corrected payload was given)."""
    dry_run: bool = False


async def replay(settings: Settings, letters: list[DeadLetter],
                 payloads: list[bytes] | None = None, dry_run: bool = False) -> ReplayResult:
    """Send ``letters`` back to their source topics, each with its original key, to its
    original partition (the key's, as every publisher's), with its original bytes or the
    corrected ``payloads[i]`` for ``letters[i]``. Idempotent downstream: the pipeline dedupes
    by event id, so a record replayed twice counts once (docs/design.md, "Contracts").

    Raises:
        ValueError: ``payloads`` given with another length than ``letters``.
        KafkaError: the brokers cannot be reached.
    """
    if payloads is not None and len(payloads) != len(letters):
        raise ValueError(f"{len(payloads)} corrected payloads for {len(letters)} records")
    result = ReplayResult(dry_run=dry_run)
    todo: list[tuple[str, int, bytes | None, bytes]] = []
    for i, d in enumerate(letters):
        value = payloads[i] if payloads is not None else d.value
        if value is None or (payloads is None and not d.replayable) or not d.source[0]:
            result.not_replayable.append(d.source)
            continue
        topic, partition, _ = d.source
        todo.append((topic, partition, d.key, value))
        result.sent[(topic, partition)] = result.sent.get((topic, partition), 0) + 1
    if dry_run or not todo:
        return result
    producer = kafka.producer(settings)
    await kafka.start(producer)
    try:
        futures = [await producer.send(topic, value, key=key, partition=partition)
                   for topic, partition, key, value in todo]
        for f in futures:
            await f
    finally:
        await producer.stop()
    return result
