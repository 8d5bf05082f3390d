"""One memory budget for every RocksDB store of the worker (docs/design.md, "Fold worker"):
real Faust RocksDB stores, no broker."""

from __future__ import annotations

import os
from pathlib import Path

from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import faust_internals
from streams.worker.app import create_app
from streams.worker.state import WRITE_BUFFER_BYTES
from streams.xp.stream import XpStream

BUDGET_MB = 8


def test_every_store_shares_one_budget(tmp_path: Path) -> None:
    """Writes far beyond the budget into four partitions' stores: the shared cache (write
    buffers charged to it) stays within about the budget, and it is what every store uses."""
    settings = Settings().with_(table_store="rocksdb://", data_dir=str(tmp_path),
                                topic_partitions=4, rocksdb_memory_mb=BUDGET_MB)
    faust_internals.patch_all(settings)
    cache, _ = faust_internals.shared_rocksdb_memory(BUDGET_MB)
    before = cache.get_usage()
    stream = XpStream(create_app(settings), settings, Metrics())
    peak = 0
    for round_ in range(6):  # 6 x 4 partitions x 2,000 x 1 KiB = 48 MiB written
        for p in range(4):
            entries: dict[bytes, bytes | None] = {
                round_.to_bytes(2, "big") + i.to_bytes(4, "big"): os.urandom(1024)
                for i in range(2000)}
            faust_internals.store_write(stream.seen.table, p, entries, round_)
            peak = max(peak, cache.get_usage() - before)
    assert peak >= WRITE_BUFFER_BYTES, "the stores' write buffers are charged to it"
    assert peak <= BUDGET_MB * 1024 * 1024 * 1.25, f"{peak / 2**20:.1f} MiB in use"
    assert faust_internals.rocksdb_memory_bytes() >= cache.get_usage()
    # every key is still there (flushed to SST files, read back through the shared cache)
    assert faust_internals.store_get(stream.seen.table, 3, (5).to_bytes(2, "big")
                                     + (1999).to_bytes(4, "big")) is not None
