"""The checkpoint of the fold worker: the one place its steps are written (docs/design.md,
"Fold worker: checkpoints").

1. **Fold**: the streams fold a fetched batch into the tables' overlays
   (:class:`streams.worker.state.TableState`), collect DLQ records and output records (the
   grant stream's awards and outcomes), and advance each source partition's position in memory
   (:meth:`Checkpoint.advance`). Nothing has left the process.
2. **Commit**, per partition p with work, in one Kafka transaction of p's producer
   (``transactional_id = <worker group>-<p>``, initialised when p was assigned, so the
   partition's new owner fences every earlier one): each touched key of p once per table (its
   newest value) to the table's changelog, p's DLQ and output records, p's position record
   (source partition -> next offset to read), and the positions as the worker group's offsets
   (``send_offsets_to_transaction``, for lag monitoring). Partitions commit concurrently. A
   zombie's send or commit fails with ``ProducerFenced``; any error raises and the process
   exits before step 3, its open transaction aborted by the next owner (or the transaction
   timeout), and the batch is read again by the partition's owner.
3. **Store**: write the local store (RocksDB) with the committed changelog offsets, so
   recovery after a crash reads the changelog from there.

Steps 2 and 3 run while the next batch's step 1 does (:meth:`Checkpoint.seal`, then
:meth:`Checkpoint.commit`): the sealed overlays stay readable as the tables' in-flight layers,
and one sealed checkpoint commits at a time, in order (docs/design.md, "Fold worker:
checkpoints").

Readers of the changelogs and outputs read committed only, so a record is seen with its
position or not at all (I1: a durable position P means every effect of the source records
before P is durable). A kill -9 after step 2 leaves the store behind the changelog: safe because
the folds are idempotent by source position (I2) and a partition is folded in offset order from
its durable position (I3). The group generation and stall checks before step 2
(:class:`FencedOut`) stop most zombies before they send anything; the transaction is what
fences the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams import kafka, topics
from streams.errors import InvalidEvent, StreamsError
from streams.metrics import Metrics
from streams.settings import FAILPOINT_PATTERN
from streams.worker.state import TableState

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
_Record = tuple[bytes | None, bytes | None, Headers]
NO_HEADERS: Headers = []
"""The headers of a changelog record: none (one shared list, never changed: aiokafka's record
builder takes a list and only reads it)."""


class FencedOut(StreamsError):
    """The worker may have lost its partitions (a rebalance it missed, or a pause longer than
    the session timeout): it must not write a checkpoint, and exits to rejoin."""


FAILPOINT_STEPS = ("recovered", "folded", "produced", "positioned")
"""Where the worker calls :meth:`Failpoint.reached`: ``recovered`` (an assignment's tables
recovered, before its partitions' producers are made: the reader), ``folded`` (the batch
folded, nothing sent yet), ``produced`` (a partition's records sent and acknowledged in its
open transaction, not committed), ``positioned`` (every transaction committed, local store not
yet written)."""

class Failpoint:
    """A crash-test hook (``XP_WORKER_FAILPOINT``, :class:`streams.settings.Settings`): at the
    n-th arrival at a named step (:data:`FAILPOINT_STEPS`), exit at once with code 137 (as
    kill -9: no cleanup, no flush), pause for some seconds with the event loop running (a
    checkpoint held past a rebalance: heartbeats go on, the revoke waits), or stop the whole
    process with SIGSTOP until something sends SIGCONT (a VM freeze landing inside a fold:
    nothing runs, not even the stall watcher). Several points are separated by commas, e.g.
    ``folded:1:60,produced:1`` (pause in the first checkpoint, then die after its changelog).

    Args:
        spec: ``<step>:<n>``, ``<step>:<n>:<seconds>`` or ``<step>:<n>:stop``, comma-separated;
            empty: never fires.

    Raises:
        ValueError: a malformed ``spec``.
    """

    def __init__(self, spec: str) -> None:
        self.points: dict[str, tuple[int, str]] = {}
        """step -> (arrivals left before it fires, action: "" = exit, "stop", or seconds)."""
        if spec and not re.fullmatch(FAILPOINT_PATTERN, spec):
            raise ValueError(f"XP_WORKER_FAILPOINT={spec!r}: expected "
                             "<step>:<n>[:<seconds>|:stop], comma-separated")
        for part in filter(None, spec.split(",")):
            step, n, *action = part.split(":")
            self.points[step] = (int(n), action[0] if action else "")

    async def reached(self, step: str) -> None:
        """Called by the checkpoint (or the reader) at ``step``; fires on the configured
        arrival."""
        point = self.points.get(step)
        if point is None or point[0] <= 0:
            return
        remaining, action = point[0] - 1, point[1]
        self.points[step] = (remaining, action)
        if remaining:
            return
        if action == "stop":
            log.warning("failpoint %s: stopping the process (SIGSTOP) until SIGCONT", step)
            os.kill(os.getpid(), signal.SIGSTOP)
            log.warning("failpoint %s: continued", step)
            return
        if action:
            log.warning("failpoint %s: pausing %s s", step, action)
            await asyncio.sleep(float(action))
            log.warning("failpoint %s: resumed", step)
            return
        log.warning("failpoint %s: exiting as kill -9 would", step)
        logging.shutdown()
        os._exit(137)


class Sealed(NamedTuple):
    """A checkpoint sealed for commit (:meth:`Checkpoint.seal`)."""

    changes: list[tuple[TableState[Any], dict[int, dict[bytes, bytes | None]]]]
    """Each table (the positions table last) with its encoded changes: partition -> key ->
    value (None: delete)."""
    records: dict[tuple[str, int], list[_Record]]
    """(topic, partition) -> DLQ and output records."""
    advanced: dict[tuple[str, int], int]
    """(source topic, partition) -> next offset to read."""

    def size(self) -> int:
        """Bytes of the keys and values it will send (changelogs, DLQ and output records):
        what the worker holds for it until it is committed."""
        return (sum(len(key) + len(value or b"")
                    for _, parts in self.changes for entries in parts.values()
                    for key, value in entries.items())
                + sum(len(key or b"") + len(value or b"")
                      for recs in self.records.values() for key, value, _ in recs))


class Checkpoint:
    """What one fetched batch changes, and the steps that make it durable (module docstring).

    Args:
        producers: partition -> that partition's started transactional producer (acks=all);
            a partition with work and no producer is a bug (``KeyError``).
        group: the worker group, whose offsets each transaction commits (lag monitoring).
        tables: every table the streams write.
        positions: the positions table (source partition -> next offset to read).
        metrics: ``xp_worker_checkpoint_seconds``, ``xp_dlq_records_total``.
        failpoint: crash tests' hook between the steps (:class:`Failpoint`).
        fence: asked before step 2 and before each commit: None while this worker still owns
            its partitions, else why it may not (:class:`FencedOut` is raised with it).
    """

    def __init__(self, producers: Mapping[int, AIOKafkaProducer], group: str,
                 tables: list[TableState[Any]], positions: TableState[int], metrics: Metrics,
                 failpoint: Failpoint | None = None,
                 fence: Callable[[], str | None] = lambda: None) -> None:
        self.producers = producers
        self.group = group
        self.fence = fence
        self.failpoint = failpoint or Failpoint("")
        self.tables = tables
        self.positions = positions
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
        with the reason, detail and source position in headers (docs/design.md, "Contracts").
        The record's shape: :func:`streams.kafka.dead_letter` (a huge key or value is cut)."""
        self.metrics.dlq.labels(exc.reason).inc()
        self.records.setdefault((dlq_topic, record.partition), []).append(
            kafka.dead_letter(record, exc.reason, exc.detail))

    def emit(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """Queue an output record of source ``partition`` for ``topic`` (same partition), sent
        in step 2 with the changelogs: durable before the source position moves past it."""
        self.records.setdefault((topic, partition), []).append((key, value, []))

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        """Step 1's bookkeeping: ``partition`` of ``topic`` is folded up to ``next_offset``."""
        self.advanced[(topic, partition)] = next_offset
        self.positions.put(partition, topics.position_key(topic, partition), next_offset)

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

    def seal(self) -> Sealed:
        """End step 1: what was folded since the last seal, encoded, as one unit to commit
        (:meth:`commit`); the tables' overlays become their in-flight layers, still read, and
        the next batch folds into fresh ones meanwhile.

        Raises:
            RuntimeError: the previous sealed checkpoint has not been committed (a bug).
        """
        sealed = Sealed([(t, t.take()) for t in [*self.tables, self.positions]],
                        self.records, self.advanced)
        self.advanced, self.records = {}, {}
        return sealed

    async def commit(self, sealed: Sealed) -> None:
        """Steps 2 and 3 of a sealed checkpoint, then its in-flight layers are dropped. Raises
        what the producers raise (``ProducerFenced`` for a zombie) and :class:`FencedOut`: the
        caller must then exit without a later checkpoint (the batch is read again). Sealed
        checkpoints are committed one at a time, in order."""
        started = time.monotonic()
        await self.failpoint.reached("folded")
        self._check_fence("changelog")
        work: dict[int, dict[tuple[str, int], Iterable[_Record]]] = {}
        for (topic, p), recs in sealed.records.items():
            work.setdefault(p, {})[(topic, p)] = recs
        for table, parts in sealed.changes:
            for p, entries in parts.items():
                work.setdefault(p, {})[(table.topic, p)] = zip(
                    entries, entries.values(), repeat(NO_HEADERS))
        offsets: dict[int, dict[TopicPartition, int]] = {}
        for (topic, p), next_offset in sealed.advanced.items():
            offsets.setdefault(p, {})[TopicPartition(topic, p)] = next_offset
        # 2. One transaction per partition, all partitions at once.
        acked: dict[tuple[str, int], int] = {}
        for done in await asyncio.gather(*(self._commit_partition(p, recs, offsets.get(p, {}))
                                           for p, recs in sorted(work.items()))):
            acked.update(done)
        await self.failpoint.reached("positioned")
        # 3. The local store, with the changelog offsets it now reflects.
        for table, parts in sealed.changes:
            for p, entries in parts.items():
                table.store.write(p, entries, acked[(table.topic, p)])
            table.settle()
        self.metrics.checkpoint_seconds.observe(time.monotonic() - started)

    async def _commit_partition(self, partition: int,
                                records: dict[tuple[str, int], Iterable[_Record]],
                                offsets: dict[TopicPartition, int]) -> dict[tuple[str, int], int]:
        """Step 2 for one partition: its records and the worker group's offsets in one
        transaction of its producer; the offset of each topic partition's last record."""
        producer = self.producers[partition]
        await producer.begin_transaction()
        acked = await self._produce(producer, records)
        await self.failpoint.reached("produced")
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self.group)
        self._check_fence("commit")
        await producer.commit_transaction()
        return acked

    def _check_fence(self, what: str) -> None:
        reason = self.fence()
        if reason is not None:
            raise FencedOut(f"not writing the {what}: {reason}")

    @staticmethod
    async def _produce(producer: AIOKafkaProducer,
                       records: dict[tuple[str, int], Iterable[_Record]]
                       ) -> dict[tuple[str, int], int]:
        """Send each partition's records as record batches; return the offset of each
        partition's last record once every batch is acknowledged."""
        futures: list[tuple[tuple[str, int], int, asyncio.Future[Any]]] = []
        for (topic, partition), recs in records.items():
            builder = producer.create_batch()
            count = 0
            for key, value, headers in recs:
                if builder.append(key=key, value=value, timestamp=None,
                                  headers=headers) is None:
                    futures.append(((topic, partition), count, await producer.send_batch(
                        builder, topic, partition=partition)))
                    builder, count = producer.create_batch(), 0
                    if builder.append(key=key, value=value, timestamp=None,
                                      headers=headers) is None:
                        raise ValueError(f"a record for {topic} exceeds the batch size")
                count += 1
            if count:
                futures.append(((topic, partition), count,
                                await producer.send_batch(builder, topic, partition=partition)))
        last: dict[tuple[str, int], int] = {}
        for tp, count, fut in futures:
            meta = await fut
            last[tp] = max(last.get(tp, -1), meta.offset + count - 1)
        return last
