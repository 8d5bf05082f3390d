"""The batch reader: reads the source topics in batches and folds them into Faust tables
(docs/design.md, "Fold worker").

Faust keeps the consumer group of the tables (assignment, changelogs, recovery); the reader has
its own aiokafka consumer with no group membership (``assign()``), for every stream's source
topic. After each recovery it is assigned partition p of every source topic for each table
partition p this worker holds, and seeks to the position recovered from the positions table
(none: the worker group's committed offset, else the log start). Then, in a loop: fetch a batch
(``getmany``), let each stream fold its records into the tables' overlays, checkpoint
(:mod:`streams.worker.checkpoint`).

Rebalances (public hooks only): when Faust revokes partitions, the batch in progress finishes
and checkpoints before the reader lets go of its source partitions; after recovery the reader
is assigned again (:meth:`SourceReader.on_recovered`). An unexpected error ends the process at
once (exit 70) without a checkpoint, like kill -9: the batch is read again after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import IllegalOperation, InvalidProducerEpoch, ProducerFenced
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams import kafka, topics
from streams.logs import log_context
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import faust_internals
from streams.worker.checkpoint import Checkpoint, Failpoint, FencedOut, Sealed
from streams.worker.restart import START_ATTEMPT_ENV, start_again
from streams.worker.standby import StandbyApplier
from streams.worker.state import TableState

log = logging.getLogger(__name__)

TRANSACTION_TIMEOUT_MS = 30_000
"""How long the broker keeps a checkpoint's transaction open before aborting it
(milliseconds): the longest a zombie's open transaction can hold back read-committed readers
(sinks, recoveries) of its partition. Above a checkpoint's duration (tens of milliseconds to a
few seconds), below the session and rebalance timeouts operators raise it to."""


class FoldStream(Protocol):
    """One source topic and its pure fold, as the reader drives it (the XP stream, the action
    stream; a third stream fits the same shape)."""

    topic: str
    """The source topic (records keyed so that one owner's records share a partition)."""
    stage: str
    """The ``stage`` label of its metrics."""
    tables: list[TableState[Any]]
    """The tables it writes, partitioned like its topic."""

    async def fold(self, partition: int, records: list[ConsumerRecord[bytes, bytes]],
                   checkpoint: Checkpoint, now: float) -> int:
        """Fold ``records`` of ``partition`` (in offset order) into the tables' overlays and
        ``checkpoint``'s DLQ records; return how many records were invalid. Never raises for
        bad input."""
        ...

    def housekeeping(self, partitions: set[int], checkpoint: Checkpoint, now: float) -> None:
        """Periodic upkeep of the tables (e.g. dedupe expiry) for the held ``partitions``."""
        ...

    async def close(self) -> None:
        """Close the stream's own clients (a database connection, a feed) at shutdown."""
        ...


StreamFactory = Callable[[Any, Settings, Metrics], FoldStream]
"""Builds one :class:`FoldStream` over the worker's Faust app: ``(app, settings, metrics) ->
stream`` (the stream classes' constructors)."""


class DlqLimit:
    """Stops the worker when too many records are invalid (arroyo's ``DlqLimit``): over the
    last ``window`` records, the share of invalid ones may not exceed ``ratio``. Off when
    ``ratio`` is 0 (the default): a bad producer deploy is then dead-lettered whole.

    Args:
        ratio: the largest allowed share of invalid records (0 < ratio <= 1; 0 = off).
        window: records over which the share is taken (at least this many before it trips).
    """

    def __init__(self, ratio: float, window: int) -> None:
        self.ratio = ratio
        self.window = window
        self._recent: deque[tuple[int, int]] = deque()
        """(records, invalid) of each batch in the window, oldest first."""
        self._invalid = 0
        self._total = 0

    def add(self, records: int, invalid: int) -> bool:
        """Count a batch of ``records`` of which ``invalid`` were; True when the limit is
        passed."""
        if not self.ratio:
            return False
        self._recent.append((records, invalid))
        self._total += records
        self._invalid += invalid
        while len(self._recent) > 1 and self._total - self._recent[0][0] >= self.window:
            old_records, old_invalid = self._recent.popleft()
            self._total -= old_records
            self._invalid -= old_invalid
        return self._total >= self.window and self._invalid > self.ratio * self._total

    @property
    def share(self) -> float:
        """The share of invalid records in the window."""
        return self._invalid / self._total if self._total else 0.0


class SourceReader:
    """Reads the source topics of ``streams`` and checkpoints what they fold.

    Args:
        settings: brokers, the worker group (lag monitoring), batch size and wait.
        metrics: records, checkpoint and gap metrics.
        streams: the folds, one per source topic.
        positions: the positions table (source partition -> next offset to read).
    """

    def __init__(self, settings: Settings, metrics: Metrics, streams: list[FoldStream],
                 positions: TableState[int]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.streams = {s.topic: s for s in streams}
        self.positions = positions
        self.tables = [t for s in streams for t in s.tables]
        self.held: set[int] = set()
        """Partitions (of every source topic and table) this worker reads and writes."""
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._stopping = False
        self._consumer: AIOKafkaConsumer | None = None
        self._producers: dict[int, AIOKafkaProducer] = {}
        """Partition -> its transactional producer (docs/design.md, "Fold worker:
        checkpoints"), made anew at every assignment."""
        self._checkpoint: Checkpoint | None = None
        self._committing: asyncio.Task[None] | None = None
        """The sealed checkpoint being committed while the next batch folds, or None."""
        self._open_records = 0
        """Records folded into the open checkpoint (not sealed yet)."""
        self._bytes_per_record = 0.0
        """Bytes the sealed checkpoints send per source record, the last one's or, when
        heavier, the estimate before it less a tenth (0.0: none sealed yet)."""
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._next_offset: dict[TopicPartition, int] = {}
        self._next_housekeeping = 0.0
        self._dlq_limit = DlqLimit(settings.worker_dlq_limit, settings.worker_dlq_window)
        self.halted: str | None = None
        """Why the reader stopped advancing (the DLQ limit), or None."""
        self._app: Any = None
        self._generation = -1
        self._assigned_generation: int | None = None
        """The generation of Faust's last assignment; None between a revoke and the next."""
        self._stalled_at = -1.0
        """When (monotonic seconds) the stall watcher last saw a stall; -1: none since the last
        revoke."""
        self._tick = time.monotonic()
        """When (monotonic seconds) the stall watcher last ran."""
        self._stall_limit = 0.8 * settings.broker_session_timeout
        """A stall of the event loop this long (seconds) may have cost the membership."""
        self._assigned_at: float | None = None
        """When the assignment whose recovery is awaited came (monotonic seconds)."""
        self._waiting_since: float | None = None
        """Since when (monotonic seconds) the worker has waited for Faust's start, an
        assignment or its recovery without progress; None while it reads."""
        self._recovery_watch: asyncio.Task[None] | None = None
        self.standbys = StandbyApplier(settings, metrics, [*self.tables, self.positions],
                                       self._exit_for)
        """The standby copies the assignor gives this worker, kept from their changelogs."""

    def readiness(self) -> str | None:
        """``/readyz`` (:mod:`streams.health`): None while the reader reads its partitions
        (or holds none in a group with more workers than partitions), else why not: it has no
        assignment yet, its tables are recovering, or it stopped at the DLQ limit."""
        if self.halted is not None:
            return f"stopped at the DLQ limit: {self.halted}"
        if self._stopping:
            return "stopping"
        if self._assigned_generation is None:
            return "waiting for a partition assignment (joining the group or rebalancing)"
        if self._assigned_at is not None:
            return (f"recovering the tables of generation {self._assigned_generation} "
                    f"({time.monotonic() - self._assigned_at:.0f} s so far)")
        return None

    @property
    def changelog_topics(self) -> list[str]:
        """Every table's changelog topic, the positions table's included."""
        return [t.topic for t in self.tables] + [self.positions.topic]

    async def _start_clients(self) -> None:
        self._consumer = kafka.consumer(self.settings, self.settings.worker_group,
                                        **kafka.gathering_fetch(self.settings))
        await self._consumer.start()
        self._checkpoint = Checkpoint(self._producers, self.settings.worker_group, self.tables,
                                      self.positions, self.metrics,
                                      Failpoint(self.settings.worker_failpoint), self._fence)
        self._task = asyncio.ensure_future(self._run())
        self._start_stall_watch()

    def _start_stall_watch(self) -> None:
        if self._watcher is None:
            self._tick = time.monotonic()
            self._watcher = asyncio.ensure_future(self._watch_stalls())

    async def _watch_stalls(self) -> None:
        """Note when the event loop (the whole process: a GC pause, SIGSTOP, a starved VM) did
        not run for :attr:`_stall_limit` seconds."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if now - self._tick > self._stall_limit:
                self._stalled_at = now
                log.warning("the worker did not run for %.1f s", now - self._tick)
            self._tick = now

    def _fence(self) -> str | None:
        """None while this worker still owns the partitions it reads (the group's generation
        is the one it was assigned in, and the process has not been paused for about a session
        timeout since: then the broker may have given its partitions to another worker, and
        only a rejoin tells); else why not."""
        if self._app is not None and self._app.consumer_generation_id != self._generation:
            return (f"the group moved to generation {self._app.consumer_generation_id} "
                    f"since partitions were assigned in {self._generation}")
        return self._stalled()

    def _stalled(self) -> str | None:
        """Why the group may have moved on without this worker: the event loop did not run for
        :attr:`_stall_limit` seconds since the last revoke, seen by the stall watcher, or now
        (a process continued after SIGSTOP runs on before the watcher does); else None."""
        if self._stalled_at >= 0 or time.monotonic() - self._tick > self._stall_limit:
            return (f"the process stalled for over {self._stall_limit:.0f} s since its "
                    "partitions were assigned and may have lost its group membership")
        return None

    def watch_start(self, app: Any) -> None:
        """Start the start-up deadline when the process starts (before Faust's own start):
        :meth:`_watch_progress` counts from now until the first assignment is recovered."""
        self._waiting_since = time.monotonic()
        if self._recovery_watch is None:
            self._recovery_watch = asyncio.ensure_future(self._watch_progress(app))
        self._start_stall_watch()  # a stall before the first assignment is recovered counts

    async def on_assigned(self, app: Any) -> None:
        """Faust's group assigned this worker its partitions (a new generation); reading starts
        once their recovery for this generation completes (:meth:`on_recovered`)."""
        self._assigned_generation = app.consumer_generation_id
        self._assigned_at = self._waiting_since = time.monotonic()
        await self.standbys.stop()  # Faust may recover any of them as an active partition now
        if self._recovery_watch is None:
            self._recovery_watch = asyncio.ensure_future(self._watch_progress(app))
        await self.on_recovered(app)

    async def _watch_progress(self, app: Any) -> None:
        """Start the worker again in place when it has waited without progress for
        ``XP_WORKER_RECOVERY_TIMEOUT_SECONDS``: for Faust's start and the first assignment
        (a broker lost inside Faust's coordinator lookup retried it for ever, /healthz green),
        for the next assignment after a revoke, or for the recovery of an assignment. Progress
        is a record recovered (:func:`faust_internals.recovery_progress`), so a long cold
        recovery that keeps reading is never cut short; a recovery that stopped is (seen on
        Apache Kafka when the only node restarted during it: no error, no progress)."""
        limit = self.settings.worker_recovery_timeout_seconds
        seen = faust_internals.recovery_progress(app)
        while not self._stopping:
            await asyncio.sleep(min(1.0, limit / 4))
            since = self._waiting_since
            if since is None:
                continue
            progress = faust_internals.recovery_progress(app)
            now = time.monotonic()
            if progress != seen:
                seen, self._waiting_since = progress, now
                continue
            if now - since > limit:
                what = ("Faust's start and a first assignment" if self._generation < 0
                        and self._assigned_generation is None
                        else f"the recovery of generation {self._assigned_generation}"
                        if self._assigned_generation is not None else "a new assignment")
                start_again(f"no progress for {limit:.0f} s waiting for {what}")
                log.critical("exiting for the supervisor to restart the worker")
                logging.shutdown()
                os._exit(70)

    async def on_recovered(self, app: Any) -> None:
        """After Faust recovered the tables: read partition p of every source topic for each
        table partition p this worker holds, from its recovered position.

        Only a recovery of the generation this worker was last assigned in counts: Faust also
        reports recoveries that completed after the group moved on (their stores then lack
        what the new generation's partitions need), and one between a revoke and the next
        assignment."""
        recovered = faust_internals.recovered_generation(app)
        if not (recovered == self._assigned_generation == app.consumer_generation_id):
            log.info("recovery of generation %s completed; waiting for generation %s's "
                     "(assigned %s)", recovered, app.consumer_generation_id,
                     self._assigned_generation)
            return
        held = faust_internals.held_partitions(app, self.changelog_topics)
        async with self._lock:
            if self._stopping or self._assigned_generation != recovered:
                return
            self._app = app
            self._generation = app.consumer_generation_id
            if self._consumer is None:
                await self._start_clients()
            assert self._consumer is not None and self._checkpoint is not None
            await self._finish()
            await self._checkpoint.failpoint.reached("recovered")
            # Making the producers fences every earlier owner of these partitions: a worker
            # stopped (SIGSTOP, a VM freeze) inside this rebalance past its session timeout
            # holds an assignment the group has replaced, and would fence the live owner.
            stalled = self._stalled()
            if stalled is not None:
                self._exit_for(FencedOut(f"not taking partitions {sorted(held)} of generation "
                                         f"{self._generation}: {stalled}"))
            await self._fence_partitions(held)
            tps = [TopicPartition(t, p) for t in self.streams for p in sorted(held)]
            self._consumer.assign(tps)
            self._next_offset.clear()
            sought: dict[tuple[str, int], int] = {}
            for tp in tps:
                position = self.positions.get(tp.partition,
                                              topics.position_key(tp.topic, tp.partition))
                if position is not None:
                    self._consumer.seek(tp, position)
                    sought[(tp.topic, tp.partition)] = self._next_offset[tp] = position
                # else: the worker group's committed offset (the first start of this worker
                # over an older one), else the log start (auto_offset_reset=earliest)
            self.held = held
            self._assigned_at = None
            self._waiting_since = None  # recovered: the watch rests until the next revoke
            os.environ.pop(START_ATTEMPT_ENV, None)  # reading: starts in place count anew
            log.info("reading partitions %s from %s", sorted(held),
                     {f"{t}/{p}": o for (t, p), o in sought.items()}
                     or "the group's committed offsets")
            if held and self.halted is None:
                self._ready.set()
            await self.standbys.start(
                faust_internals.standby_partitions(app, self.changelog_topics))

    async def _fence_partitions(self, held: set[int]) -> None:
        """A new transactional producer for each partition in ``held``
        (``transactional_id = <worker group>-<p>``), the previous ones closed. Starting one
        initialises its transactions: the broker bumps the id's epoch, so every producer an
        earlier owner of p still has (a zombie: paused, evicted, cut off) fails its next send
        or commit with ``ProducerFenced``, and a transaction it left open is aborted."""
        old = dict(self._producers)
        self._producers.clear()
        for producer in old.values():
            await producer.stop()
        started = await asyncio.gather(*(
            kafka.transactional_producer(
                self.settings, topics.transactional_id(self.settings.worker_group, p),
                TRANSACTION_TIMEOUT_MS)
            for p in sorted(held)))
        self._producers.update(zip(sorted(held), started, strict=True))

    async def on_revoked(self) -> None:
        """At the start of a rebalance: finish the batch in progress and commit its checkpoint
        (and the one before it, if still committing), then let go of the source partitions
        and the standby copies until :meth:`on_recovered`."""
        self._ready.clear()
        self._assigned_generation = None
        self._assigned_at = None
        self._waiting_since = time.monotonic()
        await self.standbys.stop()
        async with self._lock:
            await self._finish()
            if self._consumer is not None:  # paused, not unassigned: kafka.let_go
                kafka.let_go(self._consumer)
            self.held = set()
            # A stall before this rebalance is behind a rejoin; one from here on may be in it.
            self._stalled_at = -1.0

    async def stop(self) -> None:
        """Graceful stop (SIGTERM): finish and checkpoint the batch in progress, then close."""
        self._stopping = True
        self._ready.set()
        async with self._lock:
            await self._finish()
            for task in (self._task, self._watcher, self._recovery_watch):
                if task is not None:
                    task.cancel()
            await self.standbys.close()
            for client in (self._consumer, *self._producers.values()):
                if client is not None:
                    await client.stop()
            for stream in self.streams.values():
                await stream.close()

    async def _run(self) -> None:
        try:
            while not self._stopping:
                await self._ready.wait()
                async with self._lock:
                    if self._stopping or not self.held:
                        continue
                    await self._step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._exit_for(exc)

    @staticmethod
    def _exit_for(exc: BaseException) -> None:
        """End the process at once (exit 70) after a failed fold or checkpoint, without a later
        checkpoint: the partitions' batches are read again by their owner after the restart."""
        if isinstance(exc, FencedOut):
            log.critical("%s; exiting to rejoin the group (the batch is read again by this "
                         "partition's owner)", exc)
        elif isinstance(exc, (ProducerFenced, InvalidProducerEpoch, IllegalOperation)):
            # IllegalOperation: a send found the transaction just begun already ended (the
            # producer saw itself fenced in between)
            log.critical("fenced: another worker owns a partition of this checkpoint now "
                         "(%r); nothing of it was committed; exiting to rejoin the group", exc)
        else:
            log.critical("unexpected error in the batch reader; exiting without a checkpoint "
                         "(the batch is read again after the restart)", exc_info=exc)
        logging.shutdown()
        os._exit(70)

    async def _commit(self, sealed: Sealed) -> None:
        """Commit ``sealed`` (:meth:`Checkpoint.commit`); any failure ends the process."""
        assert self._checkpoint is not None
        try:
            await self._checkpoint.commit(sealed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._exit_for(exc)

    async def _drain(self) -> None:
        """Wait until the checkpoint being committed (if any) is committed and stored."""
        task, self._committing = self._committing, None
        if task is not None:
            await task

    async def _finish(self) -> None:
        """Commit everything folded: the checkpoint being committed, then the open one (the
        batches folded meanwhile, :meth:`_keep_open`). Before a revoke lets go of the
        partitions, before a new assignment is taken, and at a graceful stop."""
        await self._drain()
        if self._checkpoint is not None and not self._checkpoint.empty:
            await self._commit(self._seal())

    def _seal(self) -> Sealed:
        """Seal the open checkpoint (:meth:`Checkpoint.seal`), its source records counted in
        ``xp_worker_checkpoint_records`` and its bytes in ``xp_worker_checkpoint_bytes``; its
        bytes per source record estimate the next one's size (:meth:`_keep_open`), a
        heavier estimate decaying by a tenth a checkpoint: a run of lighter records (duplicates,
        say) amid heavy ones does not open the bound at once."""
        assert self._checkpoint is not None
        sealed = self._checkpoint.seal()
        size = sealed.size()
        self.metrics.checkpoint_records.observe(self._open_records)
        self.metrics.checkpoint_bytes.observe(size)
        if self._open_records:
            self._bytes_per_record = max(size / self._open_records,
                                         0.9 * self._bytes_per_record)
        self._open_records = 0
        return sealed

    def _keep_open(self, fetched: int) -> bool:
        """True when the open checkpoint should take the next batch too instead of waiting for
        the previous one's commit: that commit is still running, the fetch was full (a
        backlog: more records are ready) and the open checkpoint holds fewer than
        ``XP_WORKER_CHECKPOINT_RECORDS`` and, at the estimated bytes per source record
        (:meth:`_seal`), fewer than ``XP_WORKER_CHECKPOINT_BYTES``. A backlog then commits in fewer,
        larger Kafka transactions and the fold never waits for the broker; a steady stream below
        a full fetch seals each batch at once (docs/design.md, "Fold worker: checkpoints")."""
        return (self._committing is not None and not self._committing.done()
                and fetched >= self.settings.worker_batch_records
                and self._open_records < self.settings.worker_checkpoint_records
                and (self._open_records * self._bytes_per_record
                     < self.settings.worker_checkpoint_bytes))

    async def _step(self) -> None:
        """Fetch one batch, fold it (step 1), seal its checkpoint and start committing it
        (steps 2 and 3), which goes on while the next step fetches and folds; under a backlog
        the checkpoint may stay open for the next batch instead (:meth:`_keep_open`)."""
        assert self._consumer is not None and self._checkpoint is not None
        cp = self._checkpoint
        data = await self._consumer.getmany(
            timeout_ms=int(self.settings.worker_batch_seconds * 1000),
            max_records=self.settings.worker_batch_records)
        now = time.time()
        records = invalid = 0
        for tp, recs in data.items():
            if tp.partition not in self.held or not recs:
                continue
            stream = self.streams[tp.topic]
            with log_context(stage=stream.stage, group=self.settings.worker_group,
                             partition=tp.partition):
                invalid += await stream.fold(tp.partition, recs, cp, now)
            records += len(recs)
            expected = self._next_offset.get(tp)
            if expected is not None and recs[0].offset != expected:
                self.metrics.offset_gaps.labels(tp.topic).inc()
        # The next offset to read is the consumer's position, not the last record + 1: a
        # transaction's marker (the worker's awards in the XP topic) takes an offset, and a
        # position short of it would leave the lag at 1 for good. A position can also pass a
        # marker with no record returned (a batch that ended just before it): advance that too.
        for tp in self._consumer.assignment():
            if tp.partition not in self.held:
                continue
            if tp in data or tp in self._next_offset:
                position = await self._consumer.position(tp)
                if position != self._next_offset.get(tp):
                    self._next_offset[tp] = position
                    cp.advance(tp.topic, tp.partition, position)
        if records and self._dlq_limit.add(records, invalid):
            self._halt()
            return
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + self.settings.dedupe_expire_interval_seconds
            for stream in self.streams.values():
                stream.housekeeping(self.held, cp, now)
        self._open_records += records
        if not cp.empty and not self._keep_open(records):
            # One checkpoint commits at a time, in order: the previous one first. This batch's
            # is then sealed and commits while the next batch is fetched and folded.
            await self._drain()
            self._committing = asyncio.ensure_future(self._commit(self._seal()))

    def _halt(self) -> None:
        """The DLQ limit tripped: drop this batch unwritten and stop reading."""
        assert self._checkpoint is not None
        self._checkpoint.discard(set(self.held))
        self._open_records = 0
        self.halted = (f"{self._dlq_limit.share:.1%} of the last {self._dlq_limit.window} "
                       f"records were invalid, over XP_WORKER_DLQ_LIMIT="
                       f"{self._dlq_limit.ratio}")
        self.metrics.dlq_limit_halted.set(1)
        log.critical("DLQ limit: %s; the worker stops advancing (docs/runbook.md, "
                     "'XpWorkerDlqLimit')", self.halted)
        self._ready.clear()
        self.held = set()
