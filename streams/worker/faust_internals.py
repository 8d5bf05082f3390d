"""The one place that touches faust-streaming's internals (docs/design.md, "Fold worker").

Everything else in the project uses Faust's public API only (App, Table, signals, Worker). What
is here reaches past it, so it is pinned to one version of faust-streaming and of mode-streaming
(:data:`PINNED`): :func:`check_version` compares the installed versions and checks that every
private name used here exists (:func:`private_names`), and :func:`patch_all` refuses to start
otherwise (:class:`FaustMismatch`), so an upgrade fails at start-up instead of corrupting state.

- :func:`patch_all`: eight patches, one named function each (what Faust does, what the patch
  changes, why);
- :class:`TableStore`: the local store of one table, partition by partition, with a RocksDB
  (:class:`RocksDBStore`) and an in-memory implementation (:class:`MemoryStore`),
  :func:`store_of` picks;
- Faust's recovery and assignment as the reader needs them: :func:`recovery_progress`,
  :func:`recovered_generation`, :func:`held_partitions`, :func:`standby_partitions`;
- the one RocksDB memory budget of the process: :func:`shared_rocksdb_memory`,
  :func:`rocksdb_memory_bytes`.
"""

from __future__ import annotations

import bisect
import importlib.metadata
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol

from streams import kafka
from streams.errors import StreamsError
from streams.kafka import OffsetReader
from streams.settings import Settings

log = logging.getLogger(__name__)

PINNED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"}
"""The versions these internals were read from (pyproject.toml pins both)."""

_settings = Settings()
"""The settings of the last :func:`patch_all` (the patched methods read them when called)."""


class FaustMismatch(StreamsError):
    """The installed faust-streaming or mode-streaming is not the version the worker's
    internals were written for, or a private name they use is gone."""


def _driver() -> Any:
    from faust.transport.drivers import aiokafka as driver

    return driver


def private_names() -> list[tuple[Any, str, str]]:
    """``(owner, name, how)`` of every private or version-specific name this module reads or
    replaces; ``how`` is ``attr`` (a class attribute or method), ``init`` (an instance
    attribute its ``__init__``/``__post_init__`` sets) or ``field`` (a class annotation)."""
    import rocksdict
    from aiokafka import AIOKafkaConsumer
    from faust.assignor.partition_assignor import PartitionAssignor
    from faust.stores import memory, rocksdb
    from faust.tables.manager import TableManager
    from faust.tables.recovery import Recovery

    driver = _driver()
    return [
        (TableManager, "_recovery", "field"),
        (TableManager, "on_start", "attr"),
        (TableManager, "_update_channels", "attr"),
        (Recovery, "_build_offsets", "attr"),
        (Recovery, "active_highwaters", "field"),
        (Recovery, "tp_to_table", "field"),
        (PartitionAssignor, "assigned_actives", "attr"),
        (PartitionAssignor, "assigned_standbys", "attr"),
        (Recovery, "add_standby", "attr"),
        (driver.AIOKafkaConsumerThread, "_highwaters", "attr"),
        (driver.AIOKafkaConsumerThread, "_create_worker_consumer", "attr"),
        (AIOKafkaConsumer, "_isolation_level", "init"),
        (AIOKafkaConsumer, "_fetch_max_wait_ms", "init"),
        (Recovery, "on_recovery_completed", "attr"),
        (Recovery, "active_offsets", "field"),
        (Recovery, "standby_offsets", "field"),
        (rocksdb.Store, "_db_for_partition", "attr"),
        (rocksdb.Store, "offset_key", "attr"),
        (rocksdb.RocksDBOptions, "as_options", "attr"),
        (rocksdb.RocksDBOptions, "use_rocksdict", "attr"),
        (rocksdb.RocksDBOptions, "bloom_filter_size", "attr"),
        (memory.Store, "_create_batch_iterator", "attr"),
        (memory.Store, "_key_partition", "init"),
        (memory.Store, "data", "init"),
        (rocksdict.BlockBasedOptions, "set_bloom_filter", "attr"),
        (rocksdict.BlockBasedOptions, "set_block_cache", "attr"),
        (rocksdict.BlockBasedOptions, "set_index_type", "attr"),
        (rocksdict.BlockBasedOptions, "set_cache_index_and_filter_blocks", "attr"),
        (rocksdict.BlockBasedOptions, "set_pin_l0_filter_and_index_blocks_in_cache", "attr"),
        (rocksdict.BlockBasedIndexType, "binary_search", "attr"),
        (rocksdict.Options, "set_block_based_table_factory", "attr"),
        (rocksdict.Options, "set_write_buffer_manager", "attr"),
        (rocksdict.WriteBufferManager, "new_write_buffer_manager_with_cache", "attr"),
        (rocksdict.Cache, "get_usage", "attr"),
        (rocksdict.Rdict, "items", "attr"),
        (rocksdict.Rdict, "write", "attr"),
        (rocksdict.WriteBatch, "put", "attr"),
        (rocksdict.WriteBatch, "delete", "attr"),
        (rocksdict.Rdict, "put", "attr"),
    ]


def check_version() -> None:
    """Raise :class:`FaustMismatch` unless the :data:`PINNED` versions are installed and every
    name of :func:`private_names` exists."""
    for dist, version in PINNED.items():
        installed = importlib.metadata.version(dist)
        if installed != version:
            raise FaustMismatch(
                f"{dist} {installed} is installed; the worker's Faust internals "
                f"(streams/worker/faust_internals.py) were written for {version}")
    for owner, name, how in private_names():
        if how == "attr":
            found = hasattr(owner, name)
        elif how == "field":
            found = hasattr(owner, name) or name in getattr(owner, "__annotations__", {})
        else:
            init = getattr(owner, "__post_init__", None) or owner.__init__
            found = name in init.__code__.co_names
        if not found:
            raise FaustMismatch(f"{owner.__module__}.{owner.__qualname__}.{name} is gone")


def _unpatched(owner: Any, name: str) -> Any | None:
    """The original ``owner.name``, or None when a patch of this module is already in place."""
    original = getattr(owner, name)
    return None if getattr(original, "patched", False) else original


def _install(owner: Any, name: str, replacement: Callable[..., Any]) -> None:
    replacement.patched = True  # type: ignore[attr-defined]
    setattr(owner, name, replacement)


def patch_recovery_end() -> None:
    """Where table recovery ends.

    Faust recovers a changelog partition until it has applied the record before the end
    ListOffsets gives (``AIOKafkaConsumerThread._highwaters``). With transactions that end is
    a commit marker, never applied, and Faust's own fix-up runs only in its exactly-once mode,
    after two idle 5-second polls. The patch gives it the offset after the last committed
    record instead (:meth:`streams.kafka.OffsetReader.record_ends`), so a recovery ends as
    soon as it has read what the worker's checkpoints committed (docs/design.md, "Fold
    worker: checkpoints")."""
    driver = _driver()
    if _unpatched(driver.AIOKafkaConsumerThread, "_highwaters") is None:
        return

    async def _highwaters(self: Any, partitions: list[Any]) -> dict[Any, int]:
        from aiokafka.structs import TopicPartition

        async with OffsetReader(_settings) as reader:
            ends = await reader.record_ends(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout_s=30)
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in partitions}

    _install(driver.AIOKafkaConsumerThread, "_highwaters", _highwaters)


def patch_recovered_generation() -> None:
    """Which group generation a recovery was for.

    Faust calls the tables' ``on_recover`` callbacks when a recovery completes even if the
    group has moved to a newer generation meanwhile (its own check comes after them). The patch
    notes the generation the completed recovery was for on the app
    (:func:`recovered_generation`), so the reader never starts on a stale recovery."""
    from faust.tables.recovery import Recovery

    completed = _unpatched(Recovery, "on_recovery_completed")
    if completed is None:
        return

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        self.app.xp_recovered_generation = generation_id
        await completed(self, generation_id)

    _install(Recovery, "on_recovery_completed", on_recovery_completed)


def patch_table_consumer() -> None:
    """Faust's table consumer (recovery) reads committed, with our fetch wait.

    Faust opens that consumer with ``read_committed`` only in its own exactly-once mode, and
    fixes ``fetch_max_wait_ms=1500``. The worker commits its changelogs in its own
    transactions, so the patch sets ``read_committed`` (a zombie's aborted or open transaction
    is never recovered) and ``settings.fetch_max_wait_ms`` (each idle step of recovery waited
    up to 1.5 s)."""
    driver = _driver()
    create = _unpatched(driver.AIOKafkaConsumerThread, "_create_worker_consumer")
    if create is None:
        return

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        client = create(self, transport)
        client._fetch_max_wait_ms = _settings.fetch_max_wait_ms
        client._isolation_level = "read_committed"  # read by its Fetcher at start()
        return client

    _install(driver.AIOKafkaConsumerThread, "_create_worker_consumer", _create_worker_consumer)


def patch_rocksdb_memory() -> None:
    """One memory budget for every RocksDB store of the process.

    Faust gives each store (one per table and partition, standbys included) a block cache of
    its own and leaves index and filter blocks outside any cache, so the worker's memory grew
    with the partitions it held and the data it stored. The patch makes every store share one
    block cache of ``settings.rocksdb_memory_mb``, which also holds their index and filter
    blocks and is charged for their write buffers (a write buffer manager of half of it):
    :func:`shared_rocksdb_memory`. Faust's python-rocksdb path keeps its own options."""
    from faust.stores import rocksdb

    as_options = _unpatched(rocksdb.RocksDBOptions, "as_options")
    if as_options is None:
        return

    def shared_options(self: Any) -> Any:
        options = as_options(self)
        if not self.use_rocksdict:
            return options
        import rocksdict

        cache, buffers = shared_rocksdb_memory(_settings.rocksdb_memory_mb)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(buffers)
        return options

    _install(rocksdb.RocksDBOptions, "as_options", shared_options)


def patch_memory_store_partitions() -> None:
    """The memory store keyed by ``(partition, key)``, as RocksDB keeps a database per
    partition.

    Faust's memory store is one dict of keys, the partition only noted beside each key: it
    assumes a key lives in one partition. The worker's keys need not (a claim id that the
    clients of two students in different partitions both sent), and with one dict the second
    partition read the first one's sighting, a conflict the RocksDB store of a production
    worker and the changelog audit's replay never see (found by the hostile-input campaign on
    the memory store of the tests). The patch makes its recovery (``_create_batch_iterator``)
    store each changelog record under ``(partition, key)``, as :class:`MemoryStore` does."""
    from faust.stores import memory

    if _unpatched(memory.Store, "_create_batch_iterator") is None:
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

    _install(memory.Store, "_create_batch_iterator", _create_batch_iterator)


def patch_standbys() -> None:
    """Standby partitions are kept by :class:`streams.worker.standby.StandbyApplier`, not by
    Faust's recovery.

    Faust's assignor gives each worker standby copies (``table_standby_replicas``) and its
    recovery reads their changelogs after the active partitions', handing the tables one record
    at a time: more CPU per event than the active worker's fold. The patch leaves the
    assignment alone (:func:`standby_partitions` reads it) and makes ``Recovery.add_standby``
    add nothing, so Faust keeps those changelog partitions paused; the applier reads them in
    batches (docs/design.md, "Fold worker: changelogs in batches")."""
    from faust.tables.recovery import Recovery

    if _unpatched(Recovery, "add_standby") is None:
        return

    def add_standby(self: Any, table: Any, tp: Any) -> None:
        return None

    _install(Recovery, "add_standby", add_standby)


def patch_table_manager_start() -> None:
    """No second of waiting for tables at start-up.

    Faust's ``TableManager.on_start`` sleeps 1 s before it subscribes to the changelogs, so
    that tables an app defines while starting (in an agent, say) are included. The worker
    defines every table before the app starts (:func:`streams.worker.app.build`), so the
    second only delayed each start's first commit; the patch does the rest of the method
    without it."""
    from faust.tables.manager import TableManager

    if _unpatched(TableManager, "on_start") is None:
        return

    async def on_start(self: Any) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    _install(TableManager, "on_start", on_start)


RESTORE_SHARE = 0.5
"""The share of Faust's ``broker_request_timeout`` (the bound of the recovery step a batched
restore runs in) it may take; Faust's own recovery reads the rest, if any."""

RESTORE_BATCH_RECORDS = 20_000
"""Changelog records per fetch of a batched restore."""


def patch_active_recovery() -> None:
    """The active partitions' changelogs restored in batches before Faust's recovery reads them.

    Faust's recovery hands every changelog record to the table one at a time (a message, an
    event, a queue hop and a coroutine each), the same path its standbys took: a worker that
    took partitions over spent seconds of CPU per 100,000 changelog records before it could
    read a source record. The patch runs :func:`restore` where Faust computes the offsets its
    recovery starts from (``Recovery._build_offsets``, after the ends: the offset of each
    partition's last committed record, :func:`patch_recovery_end`) and moves those offsets
    along as it writes, so Faust finds nothing left to read. Within ``RESTORE_SHARE`` of
    Faust's ``broker_request_timeout`` (the step's bound); what it has not read by then, Faust
    reads. A new rebalance cancels it between two writes, as it does Faust's recovery."""
    from faust.tables.recovery import Recovery

    build_offsets = _unpatched(Recovery, "_build_offsets")
    if build_offsets is None:
        return

    async def _build_offsets(self: Any, consumer: Any, tps: Any, destination: Any,
                             title: str) -> None:
        if title == "active" and tps:
            budget = RESTORE_SHARE * float(self.app.conf.broker_request_timeout)
            await restore({tp: store_of(self.tp_to_table[tp]) for tp in tps},
                          self.active_highwaters, destination, time.monotonic() + budget)
        await build_offsets(self, consumer, tps, destination, title)

    _install(Recovery, "_build_offsets", _build_offsets)


PATCHES = (patch_recovery_end, patch_recovered_generation, patch_table_consumer,
           patch_rocksdb_memory, patch_memory_store_partitions, patch_standbys,
           patch_table_manager_start, patch_active_recovery)
"""Every patch, in the order :func:`patch_all` applies them."""


def patch_all(settings: Settings) -> None:
    """:func:`check_version`, then every patch of :data:`PATCHES`; the patched methods read
    ``settings`` from now on. Idempotent. Raises :class:`FaustMismatch`."""
    global _settings
    check_version()
    _settings = settings
    for patch in PATCHES:
        patch()


# ---- the local store of a table ----------------------------------------------------------


class TableStore(Protocol):
    """One table's local store, partition by partition: keys and values are bytes."""

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` in ``partition`` (None: absent)."""
        ...

    def write(self, partition: int, entries: Mapping[bytes, bytes | None],
              last_offset: int) -> None:
        """Write ``entries`` (key -> value, None = delete) to ``partition``, and record
        ``last_offset`` as the newest changelog offset they reflect (Faust's recovery reads the
        changelog from there on the next start)."""
        ...

    def slice(self, partition: int, after: bytes | None,
              limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` keys and values of ``partition`` in key order, after the key
        ``after`` (None: from the first). A list: the caller may change the store while it
        walks them."""
        ...

    def applied_offset(self, partition: int) -> int | None:
        """The newest changelog offset the store of ``partition`` reflects (the last
        :meth:`write`'s ``last_offset``), or None: unknown, read the changelog from its
        start."""
        ...


class RocksDBStore:
    """:class:`TableStore` over Faust's RocksDB store: a database per partition. Faust's own
    read looks the partition up from the current event (a context variable of the agent path,
    which the reader does not use) or scans every partition's database; this one opens the
    partition's."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.store = table.data

    def get(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self.store._db_for_partition(partition).get(key)
        return value

    def write(self, partition: int, entries: Mapping[bytes, bytes | None],
              last_offset: int) -> None:
        """One RocksDB write batch of ``entries``, then the offset Faust's recovery resumes
        from (under the store's ``offset_key``, as ``set_persisted_offset`` writes it): what
        Faust's ``apply_changelog_batch`` does, without the two changelog-event objects it
        takes per key. The offset goes second, in a write of its own, as there: a crash between
        the two leaves it behind the values (recovery then reads a little more of the
        changelog), and that second write is where RocksDB notices a memtable the batch filled
        and flushes it (without it, a partition written once and then left idle keeps a full
        memtable above the shared budget, ``tests/unit/test_rocksdb_memory.py``)."""
        import rocksdict

        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in entries.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        db = self.store._db_for_partition(partition)
        db.write(batch)
        db.put(self.store.offset_key, str(last_offset).encode())

    def applied_offset(self, partition: int) -> int | None:
        """Read from where ``set_persisted_offset`` (and :meth:`write`) keep it."""
        raw = self.store._db_for_partition(partition).get(self.store.offset_key)
        return None if raw is None else int(raw)

    def slice(self, partition: int, after: bytes | None,
              limit: int) -> list[tuple[bytes, bytes]]:
        """O(limit): one seek, so a scan by slices never holds the event loop for long.
        Faust's bookkeeping key is left out."""
        db = self.store._db_for_partition(partition)
        it = db.items(from_key=after) if after is not None else db.items()  # rocksdict.Rdict
        out: list[tuple[bytes, bytes]] = []
        for key, value in it:
            if key == after or key == self.store.offset_key:
                continue
            out.append((key, value))
            if len(out) >= limit:
                break
        return out


class MemoryStore:
    """:class:`TableStore` over Faust's memory store (tests, the local stack), keyed by
    ``(partition, key)`` (:func:`patch_memory_store_partitions`), each key's partition noted
    so that Faust drops a revoked partition's keys. Keeps no offsets: a memory store recovers
    from the changelog's start."""

    def __init__(self, table: Any) -> None:
        self.store = table.data

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.store.data.get((partition, key))  # type: ignore[no-any-return]

    def write(self, partition: int, entries: Mapping[bytes, bytes | None],
              last_offset: int) -> None:
        for key, value in entries.items():
            at = (partition, key)
            if value is None:
                self.store.data.pop(at, None)
                self.store._key_partition.pop(at, None)
            else:
                self.store.data[at] = value
                self.store._key_partition[at] = partition

    def slice(self, partition: int, after: bytes | None,
              limit: int) -> list[tuple[bytes, bytes]]:
        """O(n log n) in the partition's keys (sorted on each call): test-sized stores."""
        keys = sorted(k for p, k in self.store._key_partition if p == partition)
        start = 0 if after is None else bisect.bisect_right(keys, after)
        return [(k, self.store.data[(partition, k)]) for k in keys[start:start + limit]]

    def applied_offset(self, partition: int) -> int | None:
        """Always None: a memory store is read from the changelog's start."""
        return None


def write_records(store: TableStore, partition: int, records: Sequence[Any]) -> None:
    """Write changelog ``records`` of ``partition`` (aiokafka ``ConsumerRecord``s, in offset
    order, at least one) to ``store`` in one :meth:`TableStore.write`: the last value of each
    key (None, a tombstone: delete), with the last record's offset."""
    entries = {r.key: r.value for r in records if r.key is not None}
    store.write(partition, entries, records[-1].offset)


async def restore(stores: Mapping[Any, TableStore], last: Mapping[Any, int | None],
                  applied: MutableMapping[Any, int | None], deadline: float) -> int:
    """Bring each changelog partition's store up to its last committed record, in batches.

    Args:
        stores: changelog partition (``(topic, partition)``, Faust's ``TP``) -> its store.
        last: partition -> the offset of its last committed record (-1 or None: none).
        applied: partition -> the offset its store last applied (-1 or None: none); read from
            after it, and moved along after every write (Faust's recovery offsets).
        deadline: ``time.monotonic()`` after which it returns, done or not.

    Returns the records written. Reads committed only, with its own consumer (no group).
    Logs one line either way: the records written, or that every store was current (as a
    standby copy's store is when its partition moves to it).
    """
    from aiokafka.structs import TopicPartition

    def offset(value: int | None) -> int:
        return -1 if value is None else value

    todo = {TopicPartition(tp.topic, tp.partition): tp for tp in stores
            if offset(applied.get(tp)) < offset(last.get(tp))}
    if not todo:
        log.info("restored 0 changelog records in batches: all %d changelog partitions were "
                 "current", len(stores))
        return 0
    consumer = kafka.consumer(_settings, None, fetch_max_wait_ms=_settings.fetch_max_wait_ms)
    await consumer.start()
    written = 0
    try:
        consumer.assign(list(todo))
        for atp, tp in todo.items():
            after = applied.get(tp)
            if after is not None and after >= 0:  # else the log start (earliest)
                consumer.seek(atp, after + 1)
        pending = set(todo)
        while pending and time.monotonic() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=500,
                                             max_records=RESTORE_BATCH_RECORDS)
            for atp, records in batches.items():
                tp = todo[atp]
                end = last[tp]
                assert end is not None
                records = [r for r in records if r.offset <= end]
                if records:
                    write_records(stores[tp], tp.partition, records)
                    applied[tp] = records[-1].offset
                    written += len(records)
            for atp in list(pending):
                end = last[todo[atp]]
                assert end is not None
                if await consumer.position(atp) > end:
                    pending.discard(atp)
                    consumer.pause(atp)
        log.info("restored %d changelog records in batches%s", written,
                 f"; {len(pending)} partitions left to Faust's recovery" if pending else "")
    finally:
        await consumer.stop()
    return written


def store_of(table: Any) -> TableStore:
    """The :class:`TableStore` of a Faust table (RocksDB or memory, as ``XP_TABLE_STORE``
    chose)."""
    if hasattr(table.data, "_db_for_partition"):
        return RocksDBStore(table)
    return MemoryStore(table)


# ---- recovery and assignment -----------------------------------------------------------


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


def standby_partitions(app: Any, changelog_topics: list[str]) -> dict[str, set[int]]:
    """The standby copies the assignor gave this worker in its last assignment: changelog
    topic -> partitions, for ``changelog_topics`` (:func:`patch_standbys`)."""
    out: dict[str, set[int]] = {}
    for tp in app.assignor.assigned_standbys():
        if tp.topic in changelog_topics:
            out.setdefault(tp.topic, set()).add(tp.partition)
    return out


def recovery_progress(app: Any) -> int:
    """A count that grows while Faust's table recovery reads changelog records (the sum of
    the offsets it has applied); 0 before recovery exists."""
    recovery = app.tables._recovery
    if recovery is None:
        return 0
    return int(sum(recovery.active_offsets.values()) + sum(recovery.standby_offsets.values()))


def recovered_generation(app: Any) -> int | None:
    """The group generation of the table recovery that completed last (None: none yet;
    :func:`patch_recovered_generation`)."""
    value: int | None = getattr(app, "xp_recovered_generation", None)
    return value


# ---- RocksDB memory --------------------------------------------------------------------


_SHARED_MEMORY: dict[int, tuple[Any, Any]] = {}


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
    """Bytes in use of the shared RocksDB memory of the settings of the last
    :func:`patch_all` (block cache and the write buffers charged to it; 0 before a RocksDB
    store opened)."""
    shared = _SHARED_MEMORY.get(_settings.rocksdb_memory_mb)
    return 0 if shared is None else int(shared[0].get_usage())
