"""Standby copies: the table partitions Faust's assignor gives this worker as standby replicas,
kept current from their changelogs in batches (docs/design.md, "Fold worker: changelogs in
batches").

Faust's own standby path hands every changelog record to the table one at a time (a message,
an event, a queue hop and a coroutine each), which cost the standby worker more CPU than the
active worker spent folding the same events. Here the assignor still decides which worker keeps
which copy (``XP_WORKER_STANDBY_REPLICAS``); :func:`streams.worker.faust_internals.
patch_standbys` keeps Faust's recovery from reading them, and :class:`StandbyApplier` reads them
as the batch reader reads its source topics: its own read-committed consumer with no group
membership, ``getmany`` batches, one local-store write per partition and batch
(:meth:`streams.worker.faust_internals.TableStore.write`, the last value of each key, the
batch's last offset beside it, where Faust's recovery resumes when the copy becomes active).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams import kafka
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import faust_internals
from streams.worker.state import TableState

log = logging.getLogger(__name__)


class StandbyApplier:
    """Applies the changelogs of this worker's standby partitions to its local stores.

    One partition set at a time: :meth:`start` after each recovery with what the assignor gave
    (it replaces the previous set), :meth:`stop` before each rebalance (a copy must not be
    written once Faust may recover it as an active partition), :meth:`close` at shutdown. Only
    the event loop's own task writes, between two fetches.

    Args:
        settings: brokers, fetch wait (``XP_FETCH_MAX_WAIT_MS``) and batch size
            (``XP_WORKER_BATCH_RECORDS``, records per fetch).
        metrics: ``xp_worker_standby_records_total``, ``xp_worker_standby_lag_records``.
        tables: every table of the worker (the positions table's included), by changelog.
        on_error: called with an unexpected error of the applying task (a store write, a
            broken consumer); the worker's policy is to exit (70) and start again.
    """

    def __init__(self, settings: Settings, metrics: Metrics, tables: list[TableState[Any]],
                 on_error: Callable[[BaseException], None]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tables = {t.topic: t for t in tables}
        self.on_error = on_error
        self.partitions: dict[str, set[int]] = {}
        """Changelog topic -> the partitions kept as standby copies now (empty: stopped)."""
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, partitions: Mapping[str, set[int]]) -> None:
        """Keep ``partitions`` (changelog topic -> partitions) current from now on, each from
        the offset after the one its store last applied (none: the changelog's start).
        Topics of no table of this worker are ignored."""
        await self.stop()
        tps = [TopicPartition(topic, p) for topic, parts in sorted(partitions.items())
               if topic in self.tables for p in sorted(parts)]
        if not tps:
            return
        if self._consumer is None:
            self._consumer = kafka.consumer(self.settings, None,
                                            fetch_max_wait_ms=self.settings.fetch_max_wait_ms)
            await self._consumer.start()
        self._consumer.assign(tps)
        starts: dict[str, int | None] = {}
        for tp in tps:
            applied = self.tables[tp.topic].store.applied_offset(tp.partition)
            if applied is not None:  # else the log start (auto_offset_reset=earliest)
                self._consumer.seek(tp, applied + 1)
            starts[f"{tp.topic}/{tp.partition}"] = None if applied is None else applied + 1
        self.partitions = {}
        for tp in tps:
            self.partitions.setdefault(tp.topic, set()).add(tp.partition)
        log.info("keeping standby copies of %s from %s",
                 {t: sorted(p) for t, p in self.partitions.items()}, starts)
        self.metrics.standby_lag.set(float("nan"))  # unknown until each partition's first fetch
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop applying (between two store writes) and fetching; the consumer stays open,
        its partitions paused until the next :meth:`start` assigns the new ones
        (:func:`streams.kafka.let_go`, not ``assign([])``: a worker hung on SIGTERM)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._consumer is not None and self.partitions:
            kafka.let_go(self._consumer)
        self.partitions = {}
        self.metrics.standby_lag.set(0)

    async def close(self) -> None:
        """:meth:`stop`, then close the consumer."""
        await self.stop()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        assert self._consumer is not None
        try:
            while True:
                batches = await self._consumer.getmany(
                    timeout_ms=1000, max_records=self.settings.worker_batch_records)
                applied = self.apply(batches)
                if applied:
                    self.metrics.standby_records.inc(applied)
                lag = await self.lag()
                if lag is not None:
                    self.metrics.standby_lag.set(lag)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.on_error(exc)

    async def lag(self) -> int | None:
        """Records the standby copies are behind: per partition, the last stable offset of the
        last fetch (the end of the committed changelog) less the consumer's position (which
        steps over transaction markers), summed; None until every partition was fetched once
        (0 with no copies)."""
        if self._consumer is None:
            return 0
        total = 0
        for tp in self._consumer.assignment():
            end = self._consumer.last_stable_offset(tp)
            if end is None:
                return None
            total += max(0, end - await self._consumer.position(tp))
        return total

    def apply(self, batches: Mapping[TopicPartition, list[Any]]) -> int:
        """Write each partition's records (aiokafka ``ConsumerRecord``s of one fetch, in
        offset order) to its table's store in one write: the last value of each key (None, a
        tombstone: delete), with the last record's offset. Returns the records applied."""
        applied = 0
        for tp, records in batches.items():
            if records:
                faust_internals.write_records(self.tables[tp.topic].store, tp.partition, records)
                applied += len(records)
        return applied
