"""The worker's delivery guard: order per partition, holes sought back, commits behind folding.

The Faust consumer is a stand-in holding committed offsets and recording seeks; whether the
broker holds records in a hole is given per test (the broker side is covered by the kill -9
integration tests).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from streams.metrics import Metrics
from streams.settings import Settings
from streams.totals import delivery
from streams.totals.delivery import DeliveryGuard, PinnedReadOffsets

TOPIC = Settings().xp_topic


@dataclass
class Consumer:
    _committed_offset: dict[TP, int] = field(default_factory=dict)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    _read_offset: PinnedReadOffsets = field(default_factory=lambda: PinnedReadOffsets({}))

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp.partition, offset))
        self._read_offset[tp] = offset  # as Faust's Consumer.seek does

    def assignment(self) -> set[TP]:
        return {TP(TOPIC, 0)}


class FlowControl:
    def is_active(self) -> bool:
        return True


class Guard(DeliveryGuard):
    """A guard whose broker holds records at exactly ``self.on_broker`` offsets (partition 0)
    and the committed offsets of the stand-in consumer."""

    on_broker: set[int]

    async def _records_between(self, partition: int, start: int, end: int | None) -> bool:
        return any(start <= o and (end is None or o < end) for o in self.on_broker)

    async def _start_offset(self, partition: int) -> int:
        committed = self._committed(partition)
        return 0 if committed is None else committed  # the log starts at 0 here


def guard(committed: int | None = None, on_broker: set[int] | None = None) -> Guard:
    consumer = Consumer({TP(TOPIC, 0): committed} if committed is not None else {})
    app: Any = type("App", (), {"consumer": consumer, "in_recovery": False,
                                "flow_control": FlowControl()})()
    g = Guard(app, Settings(), Metrics())
    g.on_broker = on_broker or set()
    return g


def admit(g: DeliveryGuard, *offsets: int) -> list[bool]:
    async def run() -> list[bool]:
        return [await g.admit(0, o) for o in offsets]
    return asyncio.run(run())


def test_in_order_records_are_folded_and_committable_only_once_written() -> None:
    g = guard(committed=10)
    assert admit(g, 10, 11, 12) == [True, True, True]
    assert g.commit_offset(0) is None  # folded, table writes not sent yet
    g.written()
    assert g.commit_offset(0) == 13


def test_a_record_folded_before_is_skipped() -> None:
    g = guard(committed=10)
    assert admit(g, 10, 11, 10, 11, 12) == [True, True, False, False, True]


def test_a_hole_with_records_on_the_broker_seeks_back_and_holds_later_records() -> None:
    g = guard(committed=76, on_broker=set(range(0, 300)))
    assert admit(g, 76, 77, 80, 81) == [True, True, False, False]
    assert g.app.consumer.seeks == [(0, 78)]  # one seek, not one per held record
    g.written()
    assert g.commit_offset(0) == 78  # never past the hole
    assert admit(g, 78, 79, 80, 81) == [True, True, True, True]
    g.written()
    assert g.commit_offset(0) == 82


def test_a_hole_without_records_is_passed() -> None:
    """Offsets with no record (transaction markers, compaction) are not a loss."""
    g = guard(committed=5, on_broker={5, 9})
    assert admit(g, 5, 9) == [True, True]
    assert g.app.consumer.seeks == []


def test_the_first_record_after_a_rebalance_must_be_the_committed_offset() -> None:
    g = guard(committed=50, on_broker=set(range(100)))
    assert admit(g, 50, 51) == [True, True]
    g.app.consumer._committed_offset[TP(TOPIC, 0)] = 40  # another worker's commit
    g.forget({0})
    assert admit(g, 45) == [False]  # records 40..44 exist and were not delivered
    assert g.app.consumer.seeks == [(0, 40)]


def test_a_new_group_starts_at_the_log_start_and_a_hole_at_the_head_is_a_hole() -> None:
    g = guard(committed=None, on_broker=set(range(5000)))
    assert admit(g, 0, 1) == [True, True]
    g = guard(committed=None, on_broker=set(range(5000)))
    assert admit(g, 3302) == [False]  # records 0..3301 exist and were not delivered
    assert g.app.consumer.seeks == [(0, 0)]


def test_nothing_is_committed_at_or_below_the_committed_offset() -> None:
    g = guard(committed=10)
    admit(g, 10)
    g.written()
    g.app.consumer._committed_offset[TP(TOPIC, 0)] = 11
    assert g.commit_offset(0) is None


def test_a_seek_back_that_brings_nothing_is_made_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Faust's fetch loop can undo a seek; the stall check repeats it (not sooner than the
    retry time)."""
    g = guard(committed=10, on_broker=set(range(100)))
    admit(g, 10, 20)
    asyncio.run(g.check_stalls())
    assert g.app.consumer.seeks == [(0, 11)]
    monkeypatch.setattr(delivery, "SEEK_RETRY_SECONDS", 0.0)
    asyncio.run(g.check_stalls())
    assert g.app.consumer.seeks == [(0, 11), (0, 11)]


def test_a_partition_that_delivers_nothing_is_sought_back_after_the_stall_time() -> None:
    g = guard(committed=10, on_broker=set(range(100)))
    g.settings = g.settings.with_(worker_stall_seconds=0.0)
    asyncio.run(g.check_stalls())
    assert g.app.consumer.seeks == [(0, 10)]


def test_a_seek_back_pins_the_read_offset_until_the_sought_record_arrives() -> None:
    """Faust's fetch loop sets the read offset from each record it hands over; records of the
    fetch in progress must not move it past the sought offset (the re-fetched records would
    be dropped as old)."""
    g = guard(committed=10, on_broker=set(range(100)))
    read = g.app.consumer._read_offset
    tp = TP(TOPIC, 0)
    admit(g, 10, 20)  # 11..19 missing: seek back to 11
    assert read[tp] == 11
    read[tp] = 21  # the fetch loop handing over an old record past the hole
    assert read[tp] == 11
    read[tp] = 11
    admit(g, 11)  # the sought record arrives: unpinned
    read[tp] = 12
    assert read[tp] == 12
