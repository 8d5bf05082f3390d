"""The checkpoint of the fold worker: the one place its steps are written (docs/design.md,
"Fold worker: checkpoints").

1. **Fold**: the streams fold a fetched batch into the tables' overlays
   (:class:`streams.worker.state.TableState`), collect DLQ records and output records (the
   grant stream's awards and outcomes), and advance each source
   partition's position in memory (:meth:`Checkpoint.advance`). Nothing has left the process.
2. **Produce**: each touched key once per table (its newest value) to the table's changelog,
   one record batch per changelog partition, and the batch's DLQ and output records; await every
   acknowledgement (acks=all). A record that fails for good raises: the process exits without
   step 3, and the batch is read again after the restart. Before steps 2 and 3 the worker checks
   that it still owns its partitions (:class:`FencedOut`).
3. **Position**: only now the positions record of every advanced source partition (the next
   offset to read) to the positions table's changelog; await it. A durable position P means
   the changelog, DLQ and output records of every source record before P are acknowledged
   (I1).
4. **Store**: write the local store (RocksDB) with the acknowledged changelog offsets, so
   recovery after a crash reads the changelog from there.
5. **Monitor**: commit the positions to the worker's consumer group, for lag monitoring only
   (``streams monitor``, ``status``, alerts); the positions table is what the worker resumes
   from.

A kill -9 between steps leaves the changelogs ahead of the position (between 2 and 3) or the
store behind the changelog (between 3 and 4). Both are safe because the folds are idempotent by
source position (I2: a record at or before a key's last applied (partition, offset, index) is
not applied again) and a partition is folded in offset order from its durable position (I3).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.errors import InvalidEvent, StreamsError
from streams.metrics import Metrics
from streams.worker import faust_internals
from streams.worker.state import TableState

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
_Record = tuple[bytes | None, bytes | None, Headers]


def position_key(topic: str, partition: int) -> bytes:
    """The positions table's key of a source partition (one store for every partition in the
    memory store, so the partition is part of the key)."""
    return f"{topic}/{partition}".encode()


def encode_position(offset: int) -> bytes:
    """A position (the next offset to read) as changelog bytes."""
    return str(offset).encode()


def decode_position(raw: bytes) -> int:
    """Inverse of :func:`encode_position`. Raises ``ValueError``."""
    return int(raw)


class FencedOut(StreamsError):
    """The worker may have lost its partitions (a rebalance it missed, or a pause longer than
    the session timeout): it must not write a checkpoint, and exits to rejoin."""


class Failpoint:
    """A crash-test hook (``XP_WORKER_FAILPOINT``, :class:`streams.settings.Settings`): at the
    n-th arrival at a named step, exit at once with code 137 (as kill -9: no cleanup, no
    flush) or pause for some seconds (a rebalance meets a checkpoint in progress).

    Args:
        spec: ``<step>:<n>`` or ``<step>:<n>:<seconds>``; empty: never fires.

    Raises:
        ValueError: a malformed ``spec``.
    """

    def __init__(self, spec: str) -> None:
        self.step, self.remaining, self.pause = "", 0, 0.0
        if spec:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or not parts[1].isdigit():
                raise ValueError(f"XP_WORKER_FAILPOINT={spec!r}: expected <step>:<n>[:<s>]")
            self.step, self.remaining = parts[0], int(parts[1])
            self.pause = float(parts[2]) if len(parts) == 3 else 0.0

    async def reached(self, step: str) -> None:
        """Called by the checkpoint at ``step``; fires on the configured arrival."""
        if step != self.step or self.remaining <= 0:
            return
        self.remaining -= 1
        if self.remaining:
            return
        if self.pause:
            log.warning("failpoint %s: pausing %.1f s", step, self.pause)
            await asyncio.sleep(self.pause)
            return
        log.warning("failpoint %s: exiting as kill -9 would", step)
        logging.shutdown()
        os._exit(137)


class Checkpoint:
    """What one fetched batch changes, and the steps that make it durable (module docstring).

    Args:
        producer: a started producer with acks=all (the worker's own).
        tables: every table the streams write.
        positions: the positions table (source partition -> next offset to read).
        commit: step 5, called with ``{(topic, partition): next offset}``; errors are logged.
        metrics: ``xp_worker_checkpoint_seconds``, ``xp_dlq_records_total``.
        failpoint: crash tests' hook between the steps (:class:`Failpoint`).
        fence: asked before steps 2 and 3: None while this worker still owns its partitions,
            else why it may not (:class:`FencedOut` is raised with it).
    """

    def __init__(self, producer: AIOKafkaProducer, tables: list[TableState[Any]],
                 positions: TableState[int],
                 commit: Callable[[dict[tuple[str, int], int]], Awaitable[None]],
                 metrics: Metrics, failpoint: Failpoint | None = None,
                 fence: Callable[[], str | None] = lambda: None) -> None:
        self.producer = producer
        self.fence = fence
        self.failpoint = failpoint or Failpoint("")
        self.tables = tables
        self.positions = positions
        self._commit = commit
        self.metrics = metrics
        self.records: dict[tuple[str, int], list[_Record]] = {}
        """(topic, partition) -> the records this checkpoint sends besides the changelogs: DLQ
        records and the streams' outputs (a stream emits to partition p for source partition
        p: its outputs are keyed like its source)."""
        self.advanced: dict[tuple[str, int], int] = {}
        """(source topic, partition) -> next offset to read, after this checkpoint."""

    def dead_letter(self, dlq_topic: str, record: ConsumerRecord[bytes, bytes],
                    exc: InvalidEvent) -> None:
        """Queue ``record`` (original key and bytes) for ``dlq_topic``, in its own partition,
        with the reason, detail and source position in headers (docs/design.md, "Contracts")."""
        self.metrics.dlq.labels(exc.reason).inc()
        headers = [
            ("reason", exc.reason.encode()),
            ("detail", exc.detail[:500].encode("utf-8", "replace")),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        ]
        self.records.setdefault((dlq_topic, record.partition), []).append(
            (record.key, record.value, headers))

    def emit(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """Queue an output record of source ``partition`` for ``topic`` (same partition), sent
        in step 2 with the changelogs: durable before the source position moves past it."""
        self.records.setdefault((topic, partition), []).append((key, value, []))

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        """Step 1's bookkeeping: ``partition`` of ``topic`` is folded up to ``next_offset``."""
        self.advanced[(topic, partition)] = next_offset
        self.positions.put(partition, position_key(topic, partition), next_offset)

    def discard(self, partitions: set[int]) -> None:
        """Drop what this checkpoint holds for ``partitions`` (revoked before step 2)."""
        for table in [*self.tables, self.positions]:
            table.discard(partitions)
        self.records = {k: v for k, v in self.records.items() if k[1] not in partitions}
        self.advanced = {k: v for k, v in self.advanced.items() if k[1] not in partitions}

    @property
    def empty(self) -> bool:
        """True when nothing was folded since the last checkpoint."""
        return (not self.advanced and not self.records
                and not any(t.pending for t in self.tables))

    async def run(self) -> None:
        """Steps 2 to 5 (step 1 is the streams' folding). Raises what the producer raises:
        the caller must then exit without a later checkpoint (the batch is read again)."""
        started = time.monotonic()
        self._check_fence("changelog")
        # 2. Produce every touched key once, the DLQ records and the streams' outputs; await
        # the acknowledgements.
        changes = [(t, t.take()) for t in self.tables]
        out: dict[tuple[str, int], list[_Record]] = dict(self.records)
        for table, parts in changes:
            for p, entries in parts.items():
                out[(table.topic, p)] = [(k, v, []) for k, v in entries.items()]
        acked = await self._produce(out)
        await self.failpoint.reached("produced")
        # 3. Only now the positions: a durable position implies step 2 is acknowledged.
        self._check_fence("positions")
        positions = self.positions.take()
        acked_positions = await self._produce(
            {(self.positions.topic, p): [(k, v, []) for k, v in entries.items()]
             for p, entries in positions.items()})
        await self.failpoint.reached("positioned")
        # 4. The local store, with the changelog offsets it now reflects.
        for table, parts in changes:
            for p, entries in parts.items():
                faust_internals.store_write(table.table, p, entries, acked[(table.topic, p)])
        for p, entries in positions.items():
            faust_internals.store_write(self.positions.table, p, entries,
                                        acked_positions[(self.positions.topic, p)])
        # 5. Positions to the consumer group, for lag monitoring only.
        advanced, self.advanced, self.records = self.advanced, {}, {}
        if advanced:
            try:
                await self._commit(advanced)
            except Exception as exc:  # monitoring only: the positions table is the truth
                log.warning("lag-monitoring commit failed (%s); the next checkpoint retries", exc)
        self.metrics.checkpoint_seconds.observe(time.monotonic() - started)

    def _check_fence(self, what: str) -> None:
        reason = self.fence()
        if reason is not None:
            raise FencedOut(f"not writing the {what}: {reason}")

    async def _produce(self, records: dict[tuple[str, int], list[_Record]]
                       ) -> dict[tuple[str, int], int]:
        """Send each partition's records as record batches; return the offset of each
        partition's last record once every batch is acknowledged."""
        futures: list[tuple[tuple[str, int], int, asyncio.Future[Any]]] = []
        for (topic, partition), recs in records.items():
            builder = self.producer.create_batch()
            count = 0
            for key, value, headers in recs:
                if builder.append(key=key, value=value, timestamp=None,
                                  headers=headers) is None:
                    futures.append(((topic, partition), count, await self.producer.send_batch(
                        builder, topic, partition=partition)))
                    builder, count = self.producer.create_batch(), 0
                    if builder.append(key=key, value=value, timestamp=None,
                                      headers=headers) is None:
                        raise ValueError(f"a record for {topic} exceeds the batch size")
                count += 1
            if count:
                futures.append(((topic, partition), count,
                                await self.producer.send_batch(builder, topic,
                                                               partition=partition)))
        last: dict[tuple[str, int], int] = {}
        for tp, count, fut in futures:
            meta = await fut
            last[tp] = max(last.get(tp, -1), meta.offset + count - 1)
        return last
