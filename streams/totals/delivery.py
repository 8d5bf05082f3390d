"""Delivery guard of the worker: every record of the source topic is folded, in offset order per
partition, and the committed offset never passes a record that was not folded (guarantees 1, 4).

Why it exists: faust-streaming 0.15.3's consumer can lose records (issue 7's open bug, seen in
the batched kill -9 test). Around a restart it sometimes never hands some records to the agent
(a partition's offsets jump, e.g. 77 -> 80), and its commit then either stalls for good at the
hole (two or more missing: the worker "hangs" with lag) or, with one missing, commits past it
(faust-streaming issue #606: ``_new_offset`` treats a hole of one at the head as a compacted
gap), losing that record. The guard takes the commit decision from Faust and keeps order:

- :meth:`DeliveryGuard.admit` decides for each record: fold it (its offset is the next one of
  its partition), skip it (already folded by this process: a re-delivery after a seek), or
  hold it back because records before it never arrived: then the partition is sought back to
  the first missing offset (its read offset pinned there: :class:`PinnedReadOffsets`) and the
  later records are skipped until it arrives again. A hole is a loss only if the broker holds
  records in it: offsets without records (transaction markers, compaction) are checked with
  one fetch and passed.
- :meth:`DeliveryGuard.written` marks a batch's records as safe to commit once its table
  writes are sent; :func:`install_commit_guard` makes Faust commit exactly that offset (Faust
  flushes the producer before committing, so the changelog is written first).
- :meth:`DeliveryGuard.check_stalls` (a timer) seeks back a partition that has records on the
  broker past its next offset but delivered nothing for ``XP_WORKER_STALL_SECONDS``.

Rebalances reset the partitions concerned: their next offset is then the group's committed
offset read from the broker (none yet: the partition's log start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from faust.types import TP

from streams.kafka import OffsetReader
from streams.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

SEEK_RETRY_SECONDS = 2.0
"""A seek back whose first record has not arrived after this long is made again (seconds),
then after twice as long each time, up to :data:`SEEK_RETRY_MAX_SECONDS` (a seek discards
what the consumer fetched for the partition: retrying too often can starve it)."""

SEEK_RETRY_MAX_SECONDS = 30.0
"""The longest wait between two seeks back to the same offset (seconds)."""

CHECK_INTERVAL_SECONDS = 1.0
"""How often :meth:`DeliveryGuard.check_stalls` should run (seconds); it asks the broker only
about partitions that qualify."""


class DeliveryGuard:
    """Per partition of the source topic: the next offset to fold and the offset safe to commit.

    Args:
        app: the Faust app (its consumer is asked for committed offsets and to seek).
        settings: for the source topic, the broker (hole checks) and the stall time.
        metrics: ``xp_worker_delivery_seeks_total`` counts the seeks back.
        topic: the source topic it guards (default the XP topic; the action agent guards the
            action topic with its own guard).
    """

    def __init__(self, app: Any, settings: Settings, metrics: Metrics,
                 topic: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.settings = settings
        self.topic = topic or settings.xp_topic
        self.next: dict[int, int] = {}
        """partition -> next offset to fold; every record before it is folded (or absent)."""
        self.committable: dict[int, int] = {}
        """partition -> offset whose predecessors are folded and their table writes sent."""
        self._sought: dict[int, tuple[int, float, int]] = {}
        """partition -> (offset sought back to, when (time.monotonic() seconds), seeks made)."""
        self._progress: dict[int, float] = {}
        """partition -> when a record of it was last folded (time.monotonic() seconds)."""
        self._reader: OffsetReader | None = None
        self._reader_lock = asyncio.Lock()

    def _committed(self, partition: int) -> int | None:
        offset: int | None = self.app.consumer._committed_offset.get(TP(self.topic, partition))
        return offset

    async def admit(self, partition: int, offset: int) -> bool:
        """True when the record at ``partition``/``offset`` is to be folded now (and counted
        as folded); False when it is to be skipped (folded before, or held back until the
        records before it arrive)."""
        expected = self.next.get(partition)
        if expected is None:
            expected = await self._start_offset(partition)
        if offset < expected:
            return False
        if offset > expected:
            sought = self._sought.get(partition)
            if sought is not None and sought[0] == expected:
                return False  # still waiting for the sought-back records
            if await self._records_between(partition, expected, offset):
                await self._seek_back(partition, expected,
                                      f"offsets {expected}..{offset - 1} were not delivered")
                return False
        self.next[partition] = offset + 1
        if self._sought.pop(partition, None) is not None:
            self._unpin(partition)
        self._progress[partition] = time.monotonic()
        return True

    def written(self) -> None:
        """Every record admitted so far has its table writes sent: let it be committed."""
        self.committable.update(self.next)

    def commit_offset(self, partition: int) -> int | None:
        """The offset Faust may commit for ``partition`` now, or None for nothing new."""
        offset = self.committable.get(partition)
        committed = self._committed(partition)
        if offset is None or (committed is not None and offset <= committed):
            return None
        return offset

    def forget(self, partitions: set[int]) -> None:
        """Drop what is known of ``partitions`` (revoked or newly assigned in a rebalance)."""
        for partition in partitions:
            for known in (self.next, self.committable, self._sought, self._progress):
                known.pop(partition, None)
            self._unpin(partition)

    async def check_stalls(self) -> None:
        """Seek back each assigned partition whose next record is on the broker but has not
        been delivered for ``settings.worker_stall_seconds``, or not after a seek back (again
        after :data:`SEEK_RETRY_SECONDS`, doubling up to :data:`SEEK_RETRY_MAX_SECONDS`)."""
        if self.app.in_recovery or not self.app.flow_control.is_active():
            return
        now = time.monotonic()
        stall = self.settings.worker_stall_seconds
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic != self.topic:
                continue
            expected = self.next.get(tp.partition, self._committed(tp.partition))
            if expected is None:
                continue
            last = self._progress.setdefault(tp.partition, now)
            sought = self._sought.get(tp.partition)
            if sought is not None:
                wait = min(SEEK_RETRY_MAX_SECONDS, SEEK_RETRY_SECONDS * 2 ** (sought[2] - 1))
                if now - sought[1] < wait:
                    continue
                why = f"offset {expected} not delivered {now - sought[1]:.0f} s after a seek"
            elif now - last >= stall:
                why = f"nothing delivered for {now - last:.0f} s"
            else:
                continue
            if await self._records_between(tp.partition, expected, None):
                await self._seek_back(tp.partition, expected, why)

    async def _start_offset(self, partition: int) -> int:
        """Where folding of ``partition`` starts after an assignment: the group's committed
        offset as the broker has it (Faust's copy may be stale until its recovery seeks), or,
        when the group has committed none, the partition's log start (the worker reads from
        the earliest offset): a hole at the very head is a hole too (seen: a worker killed
        before its first commit, the next owner handed records from offset 3,302 on)."""
        async with self._reader_lock:
            reader = await self._open_reader()
            committed = (await reader.committed(self.settings.worker_group, self.topic)).get(
                partition)
            if committed is None:
                committed = (await reader.log_starts(self.topic)).get(partition, 0)
        return committed

    async def _open_reader(self) -> OffsetReader:
        if self._reader is None:
            self._reader = OffsetReader(self.settings)
            await self._reader.__aenter__()
        return self._reader

    async def _records_between(self, partition: int, start: int, end: int | None) -> bool:
        """Whether the broker holds a record at an offset in [start, end) (end None: any)."""
        async with self._reader_lock:  # the agent and the stall timer share one client
            reader = await self._open_reader()
            first = await reader.first_offset_from(self.topic, partition, start)
        return first is not None and (end is None or first < end)

    def _unpin(self, partition: int) -> None:
        read_offsets = self.app.consumer._read_offset
        if isinstance(read_offsets, PinnedReadOffsets):
            read_offsets.pins.pop(TP(self.topic, partition), None)

    async def _seek_back(self, partition: int, offset: int, why: str) -> None:
        self.metrics.delivery_seeks.inc()
        before = self._sought.get(partition)
        tries = before[2] + 1 if before is not None and before[0] == offset else 1
        self._sought[partition] = (offset, time.monotonic(), tries)
        tp = TP(self.topic, partition)
        consumer = self.app.consumer
        read_offsets = consumer._read_offset
        if isinstance(read_offsets, PinnedReadOffsets):
            read_offsets.pins[tp] = offset
        log.warning("partition %s of %s: %s; seeking back to %s (records after it are skipped "
                    "until it arrives)", partition, self.topic, why, offset)
        thread = getattr(consumer, "_thread", None)
        if thread is not None:
            # In the consumer's own thread: aiokafka is not thread-safe, and Faust's
            # Consumer.seek calls it from this one (seen: the fetcher crashed with a KeyError).
            await thread.seek_wait({tp: offset})
            read_offsets[tp] = offset
        else:
            await consumer.seek(tp, offset)

    async def close(self) -> None:
        """Close the broker client used for hole checks."""
        if self._reader is not None:
            await self._reader.__aexit__(None, None, None)
            self._reader = None


class PinnedReadOffsets(defaultdict[TP, int | None]):
    """Faust's consumer's read offset per partition, where a pinned partition's offset cannot
    move past its pin.

    Faust's fetch loop drops a fetched record whose offset is below the partition's read
    offset, and sets the read offset from each record it hands over. After a seek back, the
    records of the fetch in progress (past the hole) would set it high again, and the
    re-fetched records would be dropped as old: the seek undone. A pin at the sought offset
    keeps the read offset there until the guard sees that record arrive (then unpins).
    Faust's own bulk updates (``update``) are not affected.
    """

    def __init__(self, existing: dict[TP, int | None]) -> None:
        super().__init__(lambda: None, existing)
        self.pins: dict[TP, int] = {}

    def __setitem__(self, tp: TP, value: int | None) -> None:
        pin = self.pins.get(tp)
        if pin is not None and value is not None and value > pin:
            return
        super().__setitem__(tp, value)


def install_read_offset_pins(consumer: Any) -> None:
    """Give Faust's ``consumer`` :class:`PinnedReadOffsets` (before its fetch loop starts:
    the loop binds the mapping's methods when it starts)."""
    if not isinstance(consumer._read_offset, PinnedReadOffsets):
        consumer._read_offset = PinnedReadOffsets(consumer._read_offset)


def install_commit_guard() -> None:
    """Make Faust's consumer commit :meth:`DeliveryGuard.commit_offset` for the partitions of
    a topic that has a guard (registered with :func:`guard_topic`), instead of its own
    reckoning from acknowledgements (which can pass an unprocessed record: module docstring).
    Faust's bookkeeping still runs, so its lists of acknowledged offsets stay trimmed."""
    from faust.transport import consumer as base

    original = base.Consumer._new_offset
    if getattr(original, "guarded", False):
        return

    def _new_offset(self: Any, tp: TP) -> int | None:
        faust_offset: int | None = original(self, tp)
        guard: DeliveryGuard | None = getattr(self, "xp_delivery_guards", {}).get(tp.topic)
        if guard is None:
            return faust_offset
        return guard.commit_offset(tp.partition)

    _new_offset.guarded = True  # type: ignore[attr-defined]
    setattr(base.Consumer, "_new_offset", _new_offset)  # noqa: B010


def guard_topic(consumer: Any, guard: DeliveryGuard) -> None:
    """From now on Faust's ``consumer`` commits ``guard.topic`` as ``guard`` allows, and its
    read offsets can be pinned (:class:`PinnedReadOffsets`). Call before its fetch loop starts
    (an agent's first lines)."""
    guards: dict[str, DeliveryGuard] = getattr(consumer, "xp_delivery_guards", {})
    guards[guard.topic] = guard
    consumer.xp_delivery_guards = guards
    install_read_offset_pins(consumer)
