"""The worker's table store holds each partition's keys apart, on RocksDB and on the memory
store, through the reader's writes and through Faust's own changelog recovery: one key may
live in two partitions (a claim id two students' clients both used), and each partition must
read its own value (docs/design.md, "Fold worker: checkpoints")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest

from streams.dedupe import Sighting, encode_sighting
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import faust_internals
from streams.worker.app import create_app
from streams.xp.stream import XpStream

STORES = ["rocksdb://", "memory://"]
KEY = b"claim-id-of-two-students"


def _table(tmp_path: Path, store: str) -> Any:
    settings = Settings().with_(table_store=store, data_dir=str(tmp_path), topic_partitions=2)
    faust_internals.patch_all(settings)
    return XpStream(create_app(settings), settings, Metrics()).seen.table


def test_the_version_check_finds_every_private_name() -> None:
    faust_internals.check_version()
    assert len(faust_internals.private_names()) >= 20


def _value(partition: int) -> bytes:
    return encode_sighting(Sighting(bytes([partition]), partition, 7, 1.0, 1.0))


@pytest.mark.parametrize("store_url", STORES)
def test_one_key_in_two_partitions_keeps_two_values(tmp_path: Path, store_url: str) -> None:
    store = faust_internals.store_of(_table(tmp_path, store_url))
    for p in (0, 1):
        store.write(p, {KEY: _value(p)}, 1)
    assert [store.get(p, KEY) for p in (0, 1)] == [_value(0), _value(1)]
    assert [store.slice(p, None, 10) for p in (0, 1)] == [[(KEY, _value(0))], [(KEY, _value(1))]]
    store.write(0, {KEY: None}, 2)
    assert store.get(0, KEY) is None
    assert store.get(1, KEY) == _value(1)
    assert store.slice(0, None, 10) == []


class _Message(NamedTuple):
    partition: int
    value: bytes | None


class _Event(NamedTuple):
    message: _Message
    key: bytes
    value: bytes | None


@pytest.mark.asyncio
async def test_memory_recovery_keeps_partitions_apart(tmp_path: Path) -> None:
    """Faust's recovery applies changelog records of both partitions; the store then answers
    per partition, and a recovery that ends with partition 1 alone drops partition 0's keys."""
    from faust.types import TP

    table = _table(tmp_path, "memory://")
    faust_store, store = table.data, faust_internals.store_of(table)
    faust_store.apply_changelog_batch(
        [_Event(_Message(p, _value(p)), KEY, _value(p)) for p in (0, 1)],
        to_key=lambda k: k, to_value=lambda v: v)
    assert [store.get(p, KEY) for p in (0, 1)] == [_value(0), _value(1)]
    await faust_store.on_recovery_completed({TP(table.changelog_topic.get_topic_name(), 1)},
                                            set())
    assert store.get(0, KEY) is None
    assert store.get(1, KEY) == _value(1)


@pytest.mark.parametrize("store_url", STORES)
def test_a_sealed_checkpoint_is_read_until_the_store_holds_it(tmp_path: Path,
                                                             store_url: str) -> None:
    """The next batch folds while the previous checkpoint commits (docs/design.md, "Fold
    worker: checkpoints"): the sealed values (and deletions) stay visible until the store
    has them, a newer fold wins over them, and no second checkpoint seals meanwhile."""
    settings = Settings().with_(table_store=store_url, data_dir=str(tmp_path),
                                topic_partitions=2)
    faust_internals.patch_all(settings)
    seen = XpStream(create_app(settings), settings, Metrics()).seen
    seen.store.write(1, {b"gone": _value(1)}, 0)
    sighting = Sighting(b"\x01", 1, 7, 1.0, 1.0)
    seen.put(1, KEY, sighting)
    seen.put(1, b"gone", None)
    taken = seen.take()
    assert taken == {1: {KEY: encode_sighting(sighting), b"gone": None}}
    assert seen.get(1, KEY) == sighting and seen.get(1, b"gone") is None  # in flight
    newer = sighting._replace(offset=8)
    seen.put(1, KEY, newer)
    assert seen.get(1, KEY) == newer
    with pytest.raises(RuntimeError, match="before the last one settled"):
        seen.take()
    seen.store.write(1, taken[1], 1)
    seen.settle()
    assert seen.get(1, KEY) == newer and seen.get(1, b"gone") is None
    assert seen.take() == {1: {KEY: encode_sighting(newer)}}


@pytest.mark.parametrize("store_url", STORES)
def test_applied_offset_is_the_last_write_s_offset_on_rocksdb(tmp_path: Path,
                                                              store_url: str) -> None:
    """Where a standby copy resumes and Faust's recovery starts: RocksDB keeps the offset of
    the last write; a memory store keeps none (it is read from the changelog's start)."""
    store = faust_internals.store_of(_table(tmp_path, store_url))
    assert store.applied_offset(0) is None
    store.write(0, {KEY: _value(0)}, 41)
    store.write(0, {KEY: None}, 57)
    assert store.applied_offset(0) == (57 if store_url == "rocksdb://" else None)
    assert store.applied_offset(1) is None


@pytest.mark.asyncio
async def test_a_restore_with_every_store_current_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    """A standby copy that is current when its partition moves here leaves the batched restore
    nothing to read: it returns 0 without a consumer and still logs its line, which operators
    (and the rebalance tests) read to know the restore ran."""
    from faust.types import TP

    tps = [TP("t-changelog", 0), TP("t-changelog", 1)]
    caplog.set_level("INFO", logger=faust_internals.__name__)
    written = await faust_internals.restore({tp: object() for tp in tps},  # type: ignore[misc]
                                            {tps[0]: 41, tps[1]: None},
                                            {tps[0]: 41, tps[1]: -1}, deadline=0.0)
    assert written == 0
    assert "restored 0 changelog records in batches: all 2 changelog partitions were current" \
        in caplog.text
