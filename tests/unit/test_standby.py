"""The standby applier writes a fetched batch of changelog records to the table's store the way
a recovery would: the last value of each key, tombstones delete, and the batch's last offset is
where the copy resumes (docs/design.md, "Fold worker: changelogs in batches")."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import faust_internals
from streams.worker.app import create_app
from streams.worker.standby import StandbyApplier
from streams.worker.state import TableState
from streams.xp.stream import XpStream


def _record(topic: str, partition: int, offset: int, key: bytes,
            value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, 0, 0, key, value, None, len(key),
                          0 if value is None else len(value), [])


def _fail(exc: BaseException) -> None:
    raise AssertionError(f"unexpected: {exc!r}")


@pytest.mark.parametrize("store_url", ["rocksdb://", "memory://"])
def test_a_batch_lands_as_its_last_values_with_its_last_offset(tmp_path: Path,
                                                               store_url: str) -> None:
    settings = Settings().with_(table_store=store_url, data_dir=str(tmp_path),
                                topic_partitions=2)
    faust_internals.patch_all(settings)
    table: TableState[object] = XpStream(create_app(settings), settings, Metrics()).seen
    store = table.store
    store.write(1, {b"gone": b"old", b"kept": b"k"}, 3)
    applier = StandbyApplier(settings, Metrics(), [table], _fail)
    t = table.topic
    applied = applier.apply({
        TopicPartition(t, 1): [_record(t, 1, 10, b"a", b"1"), _record(t, 1, 11, b"gone", None),
                               _record(t, 1, 13, b"a", b"2"), _record(t, 1, 14, b"b", b"3")],
        TopicPartition(t, 0): [],
    })
    assert applied == 4
    assert [store.get(1, k) for k in (b"a", b"b", b"gone", b"kept")] == [b"2", b"3", None, b"k"]
    assert store.get(0, b"a") is None
    assert store.applied_offset(1) == (14 if store_url == "rocksdb://" else None)
