"""Dedupe expiry by slices over a real table store (RocksDB and the memory store), no broker:
each call reads a bounded slice after a per-partition cursor, a full pass wraps, and only
entries past the horizon get tombstones."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.dedupe import Sighting, encode_sighting
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.app import create_app
from streams.xp.stream import XpStream

HORIZON = 100.0
NOW = 1_000_000.0


def _stream(tmp_path: Path, store: str, slice_: int) -> XpStream:
    settings = Settings().with_(table_store=store, data_dir=str(tmp_path), topic_partitions=2,
                                dedupe_horizon_seconds=HORIZON, dedupe_expire_slice=slice_)
    return XpStream(create_app(settings), settings, Metrics())


def _fill(stream: XpStream, partition: int, n: int, old: bool) -> set[bytes]:
    seen_at = NOW - 2 * HORIZON if old else NOW
    entries: dict[bytes, bytes | None] = {}
    for i in range(n):
        key = bytes([partition, old]) + i.to_bytes(4, "big")
        entries[key] = encode_sighting(Sighting(b"f", partition, i, seen_at, seen_at))
    stream.seen.store.write(partition, entries, n)
    return set(entries)


def _tombstoned(stream: XpStream) -> dict[int, set[bytes]]:
    """The overlay's tombstones, written to the store as a checkpoint's step 3 would."""
    out: dict[int, set[bytes]] = {}
    for p, entries in stream.seen.take().items():
        assert all(v is None for v in entries.values())
        out[p] = set(entries)
        stream.seen.store.write(p, entries, 1)
    stream.seen.settle()
    return out


def _tombstoned_after(stream: XpStream, partitions: set[int]) -> dict[int, set[bytes]]:
    """Run one expiry call; return the tombstones it put in the checkpoint's overlay."""
    stream.housekeeping(partitions, checkpoint=None, now=NOW)  # type: ignore[arg-type]
    return _tombstoned(stream)


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_expiry_reads_bounded_slices_and_wraps(tmp_path: Path, store: str) -> None:
    stream = _stream(tmp_path, store, slice_=10)
    old = {p: _fill(stream, p, 12, old=True) for p in (0, 1)}
    fresh = {p: _fill(stream, p, 12, old=False) for p in (0, 1)}
    dropped: dict[int, set[bytes]] = {0: set(), 1: set()}
    calls = 0
    while dropped != old:
        got = _tombstoned_after(stream, {0, 1})
        for p, keys in got.items():
            assert len(keys) <= 5, "a slice is shared by the held partitions"
            dropped[p] |= keys
        calls += 1
        assert calls <= 6, f"24 entries per partition in slices of 5: {dropped}"
    assert all(not (dropped[p] & fresh[p]) for p in (0, 1))
    assert stream.metrics.dedupe_expired._value.get() == 24
    # A full pass done, the cursors start over: nothing left past the horizon.
    for _ in range(6):
        assert not any(_tombstoned_after(stream, {0, 1}).values())


def test_expiry_forgets_the_cursor_of_a_revoked_partition(tmp_path: Path) -> None:
    stream = _stream(tmp_path, "memory://", slice_=4)
    _fill(stream, 0, 6, old=True)
    _fill(stream, 1, 6, old=True)
    _tombstoned_after(stream, {0, 1})
    assert set(stream.expiry._cursor) == {0, 1}
    _tombstoned_after(stream, {1})
    assert set(stream.expiry._cursor) == {1}


@pytest.mark.parametrize("seen_at,created_at", [(NOW - 2 * HORIZON, NOW - 2 * HORIZON),
                                                (NOW - 2 * HORIZON, NOW), (NOW, NOW - 2 * HORIZON),
                                                (NOW, NOW), (NOW - HORIZON, NOW - HORIZON)])
def test_the_scan_reads_expiry_from_the_encoded_sighting_as_the_rule_does(
        seen_at: float, created_at: float) -> None:
    from streams.dedupe import expired, expired_encoded

    sighting = Sighting(b"\x01" * 8, 3, 7, seen_at, created_at, 2)
    assert expired_encoded(encode_sighting(sighting), NOW, HORIZON) == expired(sighting, NOW,
                                                                                HORIZON)
