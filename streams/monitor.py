"""``streams monitor``: consumer lag from the broker, and lag-aware reconciliation, as metrics.

Like Burrow or kminion it reads the consumer groups' committed offsets from the broker, never
joining the groups, so lag is right while a group rebalances or its consumers are down
Every ``interval`` seconds, for each (group, topic) of the pipeline:
- lag in records: high watermark minus committed offset, per partition;
- lag in seconds: now minus the timestamp of the oldest record not yet committed;
- when the committed offsets last advanced (for the "group not committing" alert).
When every group is at lag 0 (a consistent watermark: nothing in flight), it reconciles
``xp_totals`` against the ledger at most every ``reconcile_every`` seconds (docs/design.md,
guarantee 3) and exports the number of mismatched students.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.errors import KafkaError

from streams import topology
from streams.audit.reconcile import mismatched_students
from streams.errors import DatabaseUnavailable
from streams.kafka import OffsetReader, wait_for_brokers
from streams.lag import PartitionLag, read_lag
from streams.metrics import MonitorMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)


class Monitor:
    """Samples lag and reconciles; exports both through :class:`MonitorMetrics`."""

    def __init__(self, settings: Settings, metrics: MonitorMetrics, interval: float = 5.0,
                 reconcile_every: float = 60.0) -> None:
        self.settings = settings
        self.metrics = metrics
        self.interval = interval
        self.reconcile_every = reconcile_every
        self.groups = topology.group_topics(settings)
        self._last_committed: dict[str, int] = {}
        self._last_reconcile = 0.0
        self.last_mismatched: int | None = None
        self._not_ready: str | None = "no sample of the consumer offsets yet"
        """Why the monitor is not ready (:meth:`readiness`), None once a sample succeeded."""

    def readiness(self) -> str | None:
        """``/readyz`` (:mod:`streams.health`): None while the last sample of the brokers'
        offsets succeeded, else why not."""
        return self._not_ready

    async def sample(self, reader: OffsetReader) -> list[PartitionLag]:
        """Read every group's lag once and update the metrics."""
        result: list[PartitionLag] = []
        m = self.metrics
        for group, topic in self.groups:
            try:
                lags = await read_lag(reader, group, topic)
            except LookupError:
                continue  # e.g. the changelog before the worker's first write
            result.extend(lags)
            for lag in lags:
                labels = (group, topic, str(lag.partition))
                m.lag_records.labels(*labels).set(lag.lag_records)
                m.lag_seconds.labels(*labels).set(lag.lag_seconds)
                m.committed.labels(*labels).set(lag.committed or 0)
                m.high_watermark.labels(topic, str(lag.partition)).set(lag.high_watermark)
            total = sum(lag.committed or 0 for lag in lags)
            if total != self._last_committed.get(group):
                self._last_committed[group] = total
                m.last_commit.labels(group).set_to_current_time()
        m.last_sample.set_to_current_time()
        return result

    def maybe_reconcile(self, lags: list[PartitionLag]) -> None:
        """Reconcile when every group is at lag 0 and the last run is old enough."""
        if not lags or any(lag.lag_records for lag in lags):
            return
        if time.monotonic() - self._last_reconcile < self.reconcile_every:
            return
        try:
            self.last_mismatched = len(mismatched_students(self.settings.database_url))
        except DatabaseUnavailable as exc:
            self.metrics.sample_errors.labels("database").inc()
            log.warning("reconciliation skipped: %s", exc)
            return
        self._last_reconcile = time.monotonic()
        self.metrics.mismatched.set(self.last_mismatched)
        self.metrics.last_reconcile.set_to_current_time()

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every :attr:`interval` seconds until ``stop`` is set. Waits for a broker
        first, as the worker and the sinks do.

        Raises:
            BrokerUnavailable: no broker answered within ``XP_BROKER_WAIT_SECONDS``."""
        if not await wait_for_brokers(self.settings, log, stop):
            return
        async with OffsetReader(self.settings) as reader:
            while not stop.is_set():
                try:
                    lags = await self.sample(reader)
                    self._not_ready = None
                    await asyncio.to_thread(self.maybe_reconcile, lags)
                except KafkaError as exc:
                    self.metrics.sample_errors.labels("broker").inc()
                    self._not_ready = f"reading offsets failed: {exc}"
                    log.warning("reading offsets failed: %s", exc)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.interval)
                except TimeoutError:
                    pass
