"""A Faust table as the batch reader sees it: this checkpoint's changes over the previous
checkpoint's (while it commits) over the local store.

Reads go overlay -> in-flight layer -> local store (the RocksDB partition, or the memory store
in tests); writes go to the overlay only. The checkpoint (:mod:`streams.worker.checkpoint`)
seals the overlay (it becomes the in-flight layer), encodes each touched key once, produces it
to the table's changelog, and only after the broker acknowledged it (and the position is
durable) writes the local store and drops the in-flight layer; the next batch folds meanwhile,
reading the sealed values (docs/design.md, "Fold worker: checkpoints").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from streams import topics
from streams.dedupe import LEGACY_KEY_BYTES, Sighting, event_key, expired_encoded
from streams.settings import Settings
from streams.worker import faust_internals

V = TypeVar("V")


class TableState(Generic[V]):
    """One Faust table, partitioned like the source topics, with values of type ``V``.

    Args:
        table: the Faust table (``app.Table``; raw bytes keys and values).
        encode: value -> changelog bytes.
        decode: changelog bytes -> value; raises ``ValueError``/``TypeError`` on bad bytes.
    """

    def __init__(self, table: Any, encode: Callable[[V], bytes],
                 decode: Callable[[bytes], V]) -> None:
        self.table = table
        self.encode = encode
        self.decode = decode
        self.topic: str = table.changelog_topic.get_topic_name()
        """The changelog topic (partition p holds the keys of source partition p)."""
        self.pending: dict[int, dict[bytes, V | None]] = {}
        """partition -> key -> value this checkpoint will write (None: delete)."""
        self.inflight: dict[int, dict[bytes, V | None]] = {}
        """The sealed overlay of the checkpoint being committed (same shape), read until the
        local store holds it (:meth:`settle`)."""
        self._store: faust_internals.TableStore | None = None

    @property
    def store(self) -> faust_internals.TableStore:
        """The table's local store (:func:`streams.worker.faust_internals.store_of`), opened
        on first use."""
        if self._store is None:
            self._store = faust_internals.store_of(self.table)
        return self._store

    def get(self, partition: int, key: bytes) -> V | None:
        """The value of ``key`` in ``partition``: this checkpoint's, else the local store's."""
        part = self.pending.get(partition)
        if part is not None and key in part:
            return part[key]
        part = self.inflight.get(partition)
        if part is not None and key in part:
            return part[key]
        raw = self.store.get(partition, key)
        return None if raw is None else self.decode(raw)

    def put(self, partition: int, key: bytes, value: V | None) -> None:
        """Set ``key`` in ``partition`` to ``value`` (None: delete) in this checkpoint."""
        part = self.pending.get(partition)
        if part is None:
            part = self.pending[partition] = {}
        part[key] = value

    def take(self) -> dict[int, dict[bytes, bytes | None]]:
        """This checkpoint's changes, encoded (one value per key); the overlay becomes the
        in-flight layer (still read) and a new, empty overlay takes its place.

        Raises:
            RuntimeError: the previous checkpoint's layer was not settled (a bug: checkpoints
                commit one at a time).
        """
        if self.inflight:
            raise RuntimeError(f"{self.topic}: a checkpoint sealed before the last one settled")
        out = {p: {k: None if v is None else self.encode(v) for k, v in part.items()}
               for p, part in self.pending.items() if part}
        self.inflight, self.pending = self.pending, {}
        return out

    def settle(self) -> None:
        """The local store now holds the in-flight layer: stop reading it."""
        self.inflight = {}

    def discard(self, partitions: set[int]) -> None:
        """Forget what the checkpoint being folded holds for ``partitions`` (revoked before it
        was sealed; a sealed one is committed first)."""
        for p in partitions:
            self.pending.pop(p, None)

    def scan(self, partition: int, after: bytes | None,
             limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` keys and encoded values of ``partition`` in the local store, in key
        order, after the key ``after`` (None: from the first): one slice of an expiry scan
        (values left encoded: the scan reads a field or two of each)."""
        return self.store.slice(partition, after, limit)


def find_sighting(table: TableState[Sighting], partition: int, event_id: str,
                  owner: str) -> tuple[bytes, Sighting | None]:
    """The dedupe key of the event ``event_id`` of ``owner`` (:func:`streams.dedupe.event_key`)
    and its sighting in ``partition``, or None.

    A store written before events were keyed by owner holds sightings under the id alone: when
    the event's own key has none, the id's is returned (its fingerprint covers the owner, so
    the same event is still a duplicate; another owner's is a conflict, as it was then). The
    caller stores the sighting under the returned key, and the old one expires with the
    horizon (docs/design.md, Contracts).
    """
    key = event_key(event_id, owner)
    seen = table.get(partition, key)
    if seen is None:
        seen = table.get(partition, key[:LEGACY_KEY_BYTES])
    return key, seen


class Expiry:
    """Drops a sightings table's entries past the dedupe horizon, one slice at a time: up to
    ``slice_`` entries per call, shared by the held partitions, each partition resuming after
    the last key its previous slice read and starting over at its end. The event loop is held
    for one slice, never for a whole table (docs/design.md, "Fold worker: checkpoints").

    Args:
        table: a table of encoded :class:`streams.dedupe.Sighting` values.
        slice_: ``XP_DEDUPE_EXPIRE_SLICE`` (entries per call).
    """

    def __init__(self, table: TableState[Any], slice_: int) -> None:
        self.table = table
        self.slice = slice_
        self._cursor: dict[int, bytes | None] = {}

    def run(self, partitions: set[int], now: float, horizon: float) -> int:
        """One slice: tombstone (in the next checkpoint) every entry of ``partitions`` that
        :func:`streams.dedupe.expired_encoded` says is past ``horizon`` seconds at ``now``.
        Returns how many were dropped."""
        for p in list(self._cursor):
            if p not in partitions:
                del self._cursor[p]
        if not partitions:
            return 0
        share = max(1, self.slice // len(partitions))
        dropped = 0
        for p in sorted(partitions):
            entries = self.table.scan(p, self._cursor.get(p), share)
            for key, raw in entries:
                if expired_encoded(raw, now, horizon) and self.table.get(p, key) is not None:
                    self.table.put(p, key, None)
                    dropped += 1
            self._cursor[p] = entries[-1][0] if len(entries) == share else None
        return dropped


WRITE_BUFFER_BYTES = 1024 * 1024
"""Write buffer (memtable) size of each RocksDB store (bytes): small, so the shared write
buffer manager's limit holds many stores (the arena of a memtable grows by an eighth of it)."""


def store_options() -> dict[str, int]:
    """Faust's RocksDB options of each table store (one per table and partition held): write
    buffers of :data:`WRITE_BUFFER_BYTES`, at most two, SST files of twice that. Their block
    cache is not these options' ``block_cache_size`` but the one cache of
    ``settings.rocksdb_memory_mb`` every store of the process shares
    (:func:`streams.worker.faust_internals.shared_rocksdb_memory`), which also bounds the write
    buffers of all stores together. Faust's defaults (2 GiB cache, 3 x 64 MiB buffers per
    store) let the worker's RSS grow without a useful bound. The memory store ignores them."""
    return {"block_cache_size": 64 * 1024, "block_cache_compressed_size": 0,
            "write_buffer_size": WRITE_BUFFER_BYTES, "max_write_buffer_number": 2,
            "target_file_size_base": 2 * WRITE_BUFFER_BYTES}


def new_table(app: Any, settings: Settings, name: str) -> Any:
    """A Faust table ``name`` of raw bytes, partitioned like the source topics, whose changelog
    is ``<worker group>-<name>-changelog`` (:func:`streams.topics.changelog_topic`; compacted)
    whatever Faust's own group is called."""
    changelog = app.topic(
        topics.changelog_topic(settings.worker_group, name), key_type=bytes, value_type=bytes,
        partitions=settings.topic_partitions, compacting=True, deleting=False, acks=False,
        internal=True, allow_empty=True)
    return app.Table(name, default=None, key_type=bytes, value_type=bytes,
                     partitions=settings.topic_partitions, changelog_topic=changelog,
                     options=store_options())
