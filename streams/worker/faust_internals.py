"""The one place that touches faust-streaming's internals (docs/design.md, "Fold worker").

Everything else in the project uses Faust's public API only (App, Table, signals, Worker). What
is here reaches past it, so it is pinned to one faust-streaming version: :func:`patch_all` checks
the installed version and that every attribute it relies on exists, and refuses to start
otherwise (:class:`FaustMismatch`), so an upgrade fails at start-up instead of corrupting state.

- three changes to Faust's own table-recovery consumer (read committed, where recovery ends,
  the fetch wait), one memory budget for every RocksDB store of the process, and the memory
  store keyed by partition (:func:`patch_all`);
- a store read of one key in one partition (:func:`store_get`), and a store write of a
  checkpoint's acknowledged changelog records (:func:`store_write`);
- the partitions of the table changelogs this worker holds as actives (:func:`held_partitions`).
"""

from __future__ import annotations

import bisect
import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from streams.errors import StreamsError
from streams.kafka import OffsetReader
from streams.settings import Settings

log = logging.getLogger(__name__)

PINNED_VERSION = "0.15.3"
"""The faust-streaming version these internals were read from (pyproject.toml pins it)."""


class FaustMismatch(StreamsError):
    """The installed faust-streaming is not the version the worker's internals were written for."""


def _driver() -> Any:
    from faust.transport.drivers import aiokafka as driver

    return driver


def _required() -> list[tuple[Any, str]]:
    """(object, attribute) pairs this module reads or replaces."""
    from aiokafka import AIOKafkaConsumer
    from faust.stores import memory, rocksdb
    from faust.tables.manager import TableManager
    from faust.tables.recovery import Recovery

    driver = _driver()
    return [
        (TableManager, "_recovery"),
        (driver.AIOKafkaConsumerThread, "_highwaters"),
        (driver.AIOKafkaConsumerThread, "_create_worker_consumer"),
        (rocksdb.Store, "_db_for_partition"),
        (rocksdb.Store, "apply_changelog_batch"),
        (rocksdb.Store, "offset_key"),
        (rocksdb.RocksDBOptions, "as_options"),
        (Recovery, "on_recovery_completed"),
        (Recovery, "active_offsets"),
        (Recovery, "standby_offsets"),
        (memory.Store, "_key_partition"),
        (memory.Store, "_create_batch_iterator"),
        (AIOKafkaConsumer, "_isolation_level"),
        (AIOKafkaConsumer, "_fetch_max_wait_ms"),
    ]


def check_version() -> None:
    """Raise :class:`FaustMismatch` unless faust-streaming is :data:`PINNED_VERSION` and every
    attribute this module relies on exists."""
    installed = importlib.metadata.version("faust-streaming")
    if installed != PINNED_VERSION:
        raise FaustMismatch(
            f"faust-streaming {installed} is installed; the worker's Faust internals "
            f"(streams/worker/faust_internals.py) were written for {PINNED_VERSION}")
    from aiokafka import AIOKafkaConsumer
    from faust.stores import memory

    for owner, name in _required():
        if owner is memory.Store and not hasattr(owner, name):
            # an instance attribute, set in __post_init__
            if name not in memory.Store.__post_init__.__code__.co_names:
                raise FaustMismatch(f"faust-streaming: {owner.__name__}.{name} is gone")
        elif owner is AIOKafkaConsumer:
            # instance attributes set in __init__ and read when the consumer starts
            if name not in AIOKafkaConsumer.__init__.__code__.co_names:
                raise FaustMismatch(f"aiokafka: {owner.__name__}.{name} is gone")
        elif not hasattr(owner, name) and name not in getattr(owner, "__annotations__", {}):
            raise FaustMismatch(f"faust-streaming: {owner.__name__}.{name} is gone")


def patch_all(settings: Settings) -> None:
    """Check the version (:func:`check_version`), then patch Faust's recovery consumer:

    - Read committed: Faust opens its consumer (table recovery and standbys) with
      ``read_committed`` only in its own exactly-once mode; the worker commits its changelogs
      in its own transactions (docs/design.md, "Fold worker: checkpoints"), so the consumer is
      set to ``read_committed`` here: a zombie's aborted or open transaction is never
      recovered.
    - Recovery end: Faust recovers a changelog partition until it has applied the record
      before the end ListOffsets gives. With transactions that end is a marker, never
      applied, and Faust's own fix-up runs only in its exactly-once mode after two idle
      5-second polls. It is told the offset after the last committed record instead
      (:meth:`streams.kafka.OffsetReader.last_records`).
    - Recovered generation: Faust calls the tables' ``on_recover`` callbacks when a recovery
      completes even if the group has moved to a newer generation meanwhile (its own check
      comes after them); the generation the recovery was for is noted for
      :func:`recovered_generation`, so the reader never starts on a stale recovery.
    - Fetch wait: Faust fixes ``fetch_max_wait_ms=1500`` on its consumer, so each idle step of
      recovery and standby reading waits up to 1.5 s. It is set to
      ``settings.fetch_max_wait_ms``.
    - Memory store partitions: :func:`partitioned_memory_store`.
    - RocksDB memory: Faust gives each store (one per table and partition, standbys included)
      a block cache of its own and leaves index and filter blocks outside any cache, so the
      worker's memory grows with the partitions it holds and the data it stores. Every store
      of the process instead shares one block cache of ``settings.rocksdb_memory_mb``, which
      also holds their index and filter blocks and is charged for their write buffers (a
      write buffer manager of half of it), see :func:`shared_rocksdb_memory`.

    Idempotent. Raises :class:`FaustMismatch`.
    """
    check_version()
    global _rocksdb_budget_mb
    _rocksdb_budget_mb = settings.rocksdb_memory_mb
    driver = _driver()
    original = driver.AIOKafkaConsumerThread._highwaters
    if not getattr(original, "patched", False):
        async def _highwaters(self: Any, partitions: list[Any]) -> dict[Any, int]:
            result: dict[Any, int] = {}
            async with OffsetReader(settings) as reader:
                for topic in {tp.topic for tp in partitions}:
                    ends = await reader.last_records(topic, timeout_s=30)
                    for tp in partitions:
                        if tp.topic == topic:
                            result[tp] = ends[tp.partition]
            return result

        _highwaters.patched = True  # type: ignore[attr-defined]
        driver.AIOKafkaConsumerThread._highwaters = _highwaters

    from faust.tables.recovery import Recovery

    completed = Recovery.on_recovery_completed
    if not getattr(completed, "patched", False):
        async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
            self.app.xp_recovered_generation = generation_id
            await completed(self, generation_id)

        on_recovery_completed.patched = True  # type: ignore[attr-defined]
        setattr(Recovery, "on_recovery_completed", on_recovery_completed)  # noqa: B010

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if not getattr(create, "patched", False):
        def _create_worker_consumer(self: Any, transport: Any) -> Any:
            client = create(self, transport)
            client._fetch_max_wait_ms = settings.fetch_max_wait_ms
            client._isolation_level = "read_committed"  # read by its Fetcher at start()
            return client

        _create_worker_consumer.patched = True  # type: ignore[attr-defined]
        driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer

    from faust.stores import rocksdb

    as_options = rocksdb.RocksDBOptions.as_options
    if not getattr(as_options, "patched", False):
        def shared_options(self: Any) -> Any:
            options = as_options(self)
            if not self.use_rocksdict:
                return options  # python-rocksdb (not installed here): Faust's own options
            import rocksdict

            cache, buffers = shared_rocksdb_memory(_rocksdb_budget_mb)
            table = rocksdict.BlockBasedOptions()
            table.set_bloom_filter(self.bloom_filter_size, True)
            table.set_block_cache(cache)
            table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
            table.set_cache_index_and_filter_blocks(True)
            table.set_pin_l0_filter_and_index_blocks_in_cache(True)
            options.set_block_based_table_factory(table)
            options.set_write_buffer_manager(buffers)
            return options

        shared_options.patched = True  # type: ignore[attr-defined]
        setattr(rocksdb.RocksDBOptions, "as_options", shared_options)  # noqa: B010
    partitioned_memory_store()


def partitioned_memory_store() -> None:
    """Key Faust's memory store by ``(partition, key)``, as RocksDB keeps a database per
    partition.

    Faust's memory store is one dict of keys, the partition only noted beside each key: it
    assumes a key lives in one partition. The worker's keys need not (a claim id that the
    clients of two students in different partitions both sent), and with one dict the second
    partition read the first one's sighting, a conflict the RocksDB store of a production
    worker and the changelog audit's replay never see (found by the hostile-input campaign on
    the memory store of the tests). Its recovery (Faust's ``_create_batch_iterator``, which
    standbys use too) now stores each changelog record under ``(partition, key)``, as
    :func:`store_write` does; :func:`store_get` and :func:`store_slice` read them so.
    Idempotent."""
    from faust.stores import memory

    if getattr(memory.Store._create_batch_iterator, "patched", False):
        return

    def _create_batch_iterator(self: Any, mark_as_delete: Any, to_key: Any, to_value: Any,
                               batch: Any) -> Any:
        for event in batch:
            partition = event.message.partition
            key = (partition, to_key(event.key))
            if event.message.value is None:
                mark_as_delete(key)
            self._key_partition[key] = partition
            yield key, to_value(event.value)

    _create_batch_iterator.patched = True  # type: ignore[attr-defined]
    setattr(memory.Store, "_create_batch_iterator", _create_batch_iterator)  # noqa: B010


_SHARED_MEMORY: dict[int, tuple[Any, Any]] = {}
_rocksdb_budget_mb = Settings.rocksdb_memory_mb
"""The budget of the last :func:`patch_all` (its settings' ``rocksdb_memory_mb``)."""


def shared_rocksdb_memory(budget_mb: int) -> tuple[Any, Any]:
    """The process's one RocksDB block cache of ``budget_mb`` MiB (LRU) and the write buffer
    manager that charges every store's memtables to it (at most half of it, flushing the
    largest memtable beyond that; writers never stall): ``(rocksdict.Cache,
    rocksdict.WriteBufferManager)``, created on first use. Its usage is
    ``xp_worker_rocksdb_memory_bytes``."""
    if budget_mb not in _SHARED_MEMORY:
        import rocksdict

        budget = budget_mb * 1024 * 1024
        cache = rocksdict.Cache(budget)
        buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            budget // 2, False, cache)
        _SHARED_MEMORY[budget_mb] = (cache, buffers)
    return _SHARED_MEMORY[budget_mb]


def rocksdb_memory_bytes() -> int:
    """Bytes in use of the shared RocksDB memory (block cache and the write buffers charged to
    it; 0 before a RocksDB store opened)."""
    return sum(int(cache.get_usage()) for cache, _ in _SHARED_MEMORY.values())


def _is_rocksdb(store: Any) -> bool:
    return hasattr(store, "_db_for_partition")


def store_get(table: Any, partition: int, key: bytes) -> bytes | None:
    """The value of ``key`` in ``partition`` of ``table``'s local store (None: absent).

    Faust's own read looks the partition up from the current event (a context variable of the
    agent path, which the reader does not use) or scans every partition's RocksDB.
    """
    store = table.data
    if _is_rocksdb(store):
        value: bytes | None = store._db_for_partition(partition).get(key)
        return value
    return store.data.get((partition, key))  # type: ignore[no-any-return]


class _Message(NamedTuple):
    """The fields of a changelog message Faust's ``apply_changelog_batch`` reads."""

    tp: Any
    partition: int
    offset: int
    key: bytes
    value: bytes | None


class _Event(NamedTuple):
    message: _Message
    key: bytes
    value: bytes | None


def store_write(table: Any, partition: int, entries: Mapping[bytes, bytes | None],
                last_offset: int) -> None:
    """Write ``entries`` (key -> value, None = delete) to ``partition`` of ``table``'s local
    store, and record ``last_offset`` as the newest changelog offset they reflect (Faust's
    recovery reads the changelog from there on the next start).

    RocksDB: one write batch through the store's ``apply_changelog_batch``. Memory store (tests):
    the dict, under ``(partition, key)`` (:func:`partitioned_memory_store`), with the partition
    noted so a revoked partition's keys are dropped.
    """
    from faust.types import TP

    store = table.data
    tp = TP(table.changelog_topic.get_topic_name(), partition)
    if _is_rocksdb(store):
        events = [_Event(_Message(tp, partition, last_offset, k, v), k, v)
                  for k, v in entries.items()]
        store.apply_changelog_batch(events, to_key=lambda k: k, to_value=lambda v: v)
        return
    for key, value in entries.items():
        at = (partition, key)
        if value is None:
            store.data.pop(at, None)
            store._key_partition.pop(at, None)
        else:
            store.data[at] = value
            store._key_partition[at] = partition


def held_partitions(app: Any, changelog_topics: list[str]) -> set[int]:
    """The partitions this worker holds as the active owner of every table's changelog.

    Faust's assignor co-partitions changelogs of equal partition count, so partition p of every
    table lands on one worker; a partition held for some tables only (never seen) is left out
    and logged.
    """
    actives = app.assignor.assigned_actives()
    per_topic = [{tp.partition for tp in actives if tp.topic == t} for t in changelog_topics]
    held = set.intersection(*per_topic) if per_topic else set()
    partial = set.union(*per_topic) - held if per_topic else set()
    if partial:
        log.error("table partitions %s are assigned for some tables only; not reading them",
                  sorted(partial))
    return held


def store_slice(table: Any, partition: int, after: bytes | None,
                limit: int) -> list[tuple[bytes, bytes]]:
    """Up to ``limit`` keys and values of ``partition`` in ``table``'s local store, in key
    order, starting after the key ``after`` (None: from the first), Faust's bookkeeping key
    left out. A list: the caller may change the store while it walks them. Costs O(limit) on
    RocksDB (one seek), so a scan by slices never blocks the event loop for long."""
    store = table.data
    if _is_rocksdb(store):
        db = store._db_for_partition(partition)
        it = db.items(from_key=after) if after is not None else db.items()  # rocksdict.Rdict
        out: list[tuple[bytes, bytes]] = []
        for key, value in it:
            if key == after or key == store.offset_key:
                continue
            out.append((key, value))
            if len(out) >= limit:
                break
        return out
    keys = sorted(k for p, k in store._key_partition if p == partition)
    start = 0 if after is None else bisect.bisect_right(keys, after)
    return [(k, store.data[(partition, k)]) for k in keys[start:start + limit]]


def recovery_progress(app: Any) -> int:
    """A count that grows while Faust's table recovery reads changelog records (the sum of
    the offsets it has applied, actives and standbys); 0 before recovery exists."""
    recovery = app.tables._recovery
    if recovery is None:
        return 0
    return int(sum(recovery.active_offsets.values()) + sum(recovery.standby_offsets.values()))


def recovered_generation(app: Any) -> int | None:
    """The group generation of the table recovery that completed last (None: none yet)."""
    value: int | None = getattr(app, "xp_recovered_generation", None)
    return value
