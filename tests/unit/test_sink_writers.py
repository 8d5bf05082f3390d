"""The sink's batching and each writer's row mapping (streams/sink.py, streams/xp/ledger.py,
streams/xp/totals.py, streams/actions/ledger.py, streams/actions/progress.py), without a
broker or a database: records are built in memory, the writers' batches inspected."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from streams.actions.fold import Progress, encode_progress
from streams.actions.ledger import ActionLedgerWriter
from streams.actions.progress import ProgressWriter
from streams.events import partition_for
from streams.metrics import Metrics
from streams.settings import Settings
from streams.sink import PostgresSink
from streams.xp.fold import EMPTY, encode_totals
from streams.xp.ledger import LedgerWriter
from streams.xp.totals import TotalsWriter

STUDENT = "0b7e4c1a-5d2f-4e3b-8a9c-1d2e3f4a5b6c"
PARTITIONS = 12
CREATED = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def record(key: bytes | None, value: bytes | None, partition: int = 0, offset: int = 0,
           topic: str = "xp-events") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, int(CREATED.timestamp() * 1000), 0, key,
                          value, None, len(key or b""), len(value or b""), ())


def xp_value(n: int, delta: int = 10) -> bytes:
    return orjson.dumps({"id": str(uuid.UUID(int=n, version=4)), "student_id": STUDENT,
                         "kind": "typing", "delta": delta, "created_at": CREATED.isoformat()})


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


OWN = partition_for(STUDENT.encode(), PARTITIONS)


def test_the_ledger_writer_maps_each_event_to_its_row_with_provenance() -> None:
    metrics = Metrics()
    writer = LedgerWriter.from_settings(Settings(topic_partitions=PARTITIONS), metrics)
    writer.add(record(STUDENT.encode(), xp_value(1, delta=7), OWN, 41))
    writer.add(record(STUDENT.encode(), xp_value(1, delta=7), OWN, 42))  # same id: first wins
    writer.add(record(STUDENT.encode(), b"{not json", OWN, 43))
    assert writer.pending() == 3
    rows = writer.take()
    assert len(rows) == 1
    event_id, student, kind, delta, word_set, homework, created, metadata, _fp, topic, \
        partition, offset, index, record_ts = rows[0]
    assert (event_id, student, kind, delta) == (str(uuid.UUID(int=1, version=4)), STUDENT,
                                                "typing", 7)
    # created_at as the event carried it, record_ts as ISO 8601: PostgreSQL parses both
    assert (word_set, homework, metadata, created) == (None, None, None, CREATED.isoformat())
    assert (topic, partition, offset, index) == ("xp-events", OWN, 41, 0)
    # the record's timestamp: with created_at, it picks the season
    assert datetime.fromisoformat(record_ts) == CREATED  # type: ignore[arg-type]
    assert rows.newest_s == CREATED.timestamp()  # the freshness exported once written
    assert counted(metrics, "xp_records_total", stage="ledger", outcome="valid") == 2
    assert counted(metrics, "xp_records_total", stage="ledger", outcome="invalid") == 1
    assert writer.pending() == 0 and writer.take() == []


def test_a_batched_record_gives_one_ledger_row_per_event_with_its_index() -> None:
    events = [orjson.loads(xp_value(n)) for n in (5, 6, 7)]
    writer = LedgerWriter.from_settings(Settings(topic_partitions=PARTITIONS), Metrics())
    writer.add(record(STUDENT.encode(), orjson.dumps(events), OWN, 9))
    assert [(r[0], r[11], r[12]) for r in writer.take()] == [
        (e["id"], 9, i) for i, e in enumerate(events)]


def test_the_action_ledger_writer_maps_the_contract_columns() -> None:
    profile = "5d3a9c1e-2b4f-4e6a-8c0d-1f2e3a4b5c6d"
    doc = {"id": str(uuid.UUID(int=3, version=4)), "action_id": "apply_genius",
           "profile_id": profile, "source": "dashboard", "vector": "genius",
           "selected_at": CREATED.isoformat(), "completed_at": None, "duration": 12.5}
    partition = partition_for(profile.encode(), PARTITIONS)
    writer = ActionLedgerWriter.from_settings(Settings(topic_partitions=PARTITIONS), Metrics())
    writer.add(record(profile.encode(), orjson.dumps(doc), partition, 5, "action-events"))
    writer.add(record(profile.encode(), orjson.dumps(doc), 99, 6, "action-events"))  # wrong one
    (row,) = writer.take()
    assert row[:5] == (doc["id"], "apply_genius", profile, "dashboard", "genius")
    assert row[-3:] == ("action-events", partition, 5)


def totals(version: int, total_xp: int) -> bytes:
    return encode_totals(EMPTY._replace(version=version, total_xp=total_xp, updated_at=5.0))


def test_the_totals_writer_keeps_the_highest_version_per_student_in_any_order() -> None:
    metrics = Metrics()
    writer = TotalsWriter.from_settings(Settings(), metrics)
    key = STUDENT.encode()
    for offset, (version, xp) in enumerate([(3, 30), (5, 50), (4, 40)]):
        writer.add(record(key, totals(version, xp), 0, offset))
    writer.add(record(key, None, 0, 3))  # a tombstone is skipped
    writer.add(record(b"other", b"[garbage", 0, 4))  # unreadable: logged and skipped
    assert writer.pending() == 5
    latest = writer.take()
    assert set(latest) == {key} and latest[key].version == 5
    row = writer.row(key, latest[key])
    assert row[:4] == (STUDENT, 50, 0, None) and row[6] == 5 and row[7:] == (0, None)


def test_the_progress_writer_keeps_the_row_with_the_most_events_folded() -> None:
    writer = ProgressWriter.from_settings(Settings(), Metrics())
    key = b"p|genius|v1"
    for applied in (2, 7, 3):
        writer.add(record(key, encode_progress(Progress("p", "genius", "v1", step_index=applied,
                                                        applied=applied))))
    latest = writer.take()
    assert latest[key].applied == 7
    assert writer.row(key, latest[key])[:4] == ("p", "genius", "v1", 7)


class FakeWriter:
    """A writer that only counts (the sink's batching seen alone)."""

    name = "fake"

    def __init__(self) -> None:
        self.added: list[tuple[int, int]] = []

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.added.append((record.partition, record.offset))

    def pending(self) -> int:
        return len(self.added)

    def take(self) -> Any:
        taken, self.added = self.added, []
        return taken

    async def write(self, conn: Any, batch: Any) -> None:
        raise AssertionError("not written in this test")

    def discard(self) -> None:
        self.added = []


def test_the_sink_batch_covers_the_next_offset_of_each_partition_and_fills_by_records_or_bytes(
) -> None:
    settings = Settings(sink_batch_records=4, sink_batch_bytes=100)
    sink = PostgresSink(settings, "t", "g", FakeWriter(), Metrics())
    for partition, offset in [(0, 10), (1, 3), (0, 11)]:
        sink._add(record(b"k", b"x", partition, offset))
    assert not sink._full()
    sink._add(record(b"k", b"x", 2, 0))
    assert sink._full()  # 4 records
    taken = sink._take()
    assert taken is not None
    assert taken.positions == {0: 12, 1: 4, 2: 1} and taken.records == 4
    assert taken.batch == [(0, 10), (1, 3), (0, 11), (2, 0)]
    assert sink._take() is None  # nothing pending
    sink._add(record(b"k", b"y" * 100, 5, 0))
    assert sink._full()  # 100 bytes
    sink.reset_batch()
    assert sink._take() is None and not sink._full()


def test_a_refusal_is_named_after_its_sqlstate() -> None:
    import psycopg

    from streams.sink import refusal_reason

    assert refusal_reason(psycopg.errors.CheckViolation()) == "check_violation"
    assert refusal_reason(psycopg.errors.StringDataRightTruncation()) == \
        "string_data_right_truncation"
