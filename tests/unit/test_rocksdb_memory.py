"""One memory budget for every RocksDB store of the worker (docs/design.md, "Fold worker"):
real Faust RocksDB stores, no broker."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import faust_internals
from streams.worker.app import create_app
from streams.worker.state import WRITE_BUFFER_BYTES
from streams.xp.stream import XpStream

BUDGET_MB = 8


def settled_usage(cache: Any, before: int, bound: float, timeout_s: float = 30.0) -> int:
    """The cache's usage above ``before`` once it is at or below ``bound`` bytes, polled until
    ``timeout_s``; the last reading when it never gets there. The write buffer manager never
    stalls a writer (the worker writes on its event loop): memtables written while a flush
    runs are charged above its limit until the flush ends, so how far the usage rises during a
    write depends on how fast the background flush threads run (on a loaded machine: 10.8 MiB
    for this test's 8 MiB once). What the budget bounds is where the usage settles."""
    deadline = time.monotonic() + timeout_s
    while True:
        usage = int(cache.get_usage()) - before
        if usage <= bound or time.monotonic() > deadline:
            return usage
        time.sleep(0.05)


def test_every_store_shares_one_budget(tmp_path: Path) -> None:
    """Writes far beyond the budget into four partitions' stores: the shared cache (write
    buffers charged to it) settles within about the budget after every round of writes, and it
    is what every store uses."""
    settings = Settings().with_(table_store="rocksdb://", data_dir=str(tmp_path),
                                topic_partitions=4, rocksdb_memory_mb=BUDGET_MB)
    faust_internals.patch_all(settings)
    cache, _ = faust_internals.shared_rocksdb_memory(BUDGET_MB)
    before = cache.get_usage()
    stream = XpStream(create_app(settings), settings, Metrics())
    bound = BUDGET_MB * 1024 * 1024 * 1.25
    peak = settled = 0
    for round_ in range(6):  # 6 x 4 partitions x 2,000 x 1 KiB = 48 MiB written
        for p in range(4):
            entries: dict[bytes, bytes | None] = {
                round_.to_bytes(2, "big") + i.to_bytes(4, "big"): os.urandom(1024)
                for i in range(2000)}
            stream.seen.store.write(p, entries, round_)
            peak = max(peak, cache.get_usage() - before)
        settled = max(settled, settled_usage(cache, before, bound))
    assert peak >= WRITE_BUFFER_BYTES, "the stores' write buffers are charged to it"
    assert settled <= bound, f"{settled / 2**20:.1f} MiB in use after the flushes"
    # the metric reads this cache (two readings agree once the background threads are quiet:
    # a flush or compaction between them moved the usage by a few KiB once)
    deadline = time.monotonic() + 30
    readings = (faust_internals.rocksdb_memory_bytes(), cache.get_usage())
    while readings[0] != readings[1] and time.monotonic() < deadline:
        time.sleep(0.05)
        readings = (faust_internals.rocksdb_memory_bytes(), cache.get_usage())
    assert readings[0] == readings[1], readings
    # every key is still there (flushed to SST files, read back through the shared cache)
    assert stream.seen.store.get(3, (5).to_bytes(2, "big") + (1999).to_bytes(4, "big")) \
        is not None
