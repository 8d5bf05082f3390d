"""The XP stream of the fold worker: validate -> DLQ | dedupe by event -> fold into totals.

Two tables, partitioned like the XP topic (key = student, so all of one student's event ids
live in the student's partition):
- ``xp_totals``: student_id -> :class:`~streams.xp.fold.Totals` (its changelog feeds the
  totals writer);
- ``xp_dedupe``: event (id and student, :func:`streams.dedupe.event_key`, 32 bytes) ->
  :class:`~streams.dedupe.Sighting`, kept for the dedupe horizon, then expired; older events are
  checked against the ledger (docs/design.md, guarantee 8).

Crash safety (guarantee 4): the reader resumes a partition at its durable position, but the
changelogs may hold effects of later records (a kill -9 between the checkpoint's produce and
position steps, :mod:`streams.worker.checkpoint`). The fold is idempotent by source position:
a sighting remembers its record's position (a record read again is a ``REDELIVERY``, not a
duplicate), and the totals remember the last applied position (a record at or before it is
not applied again). The current value is written again either way, so the changelog has it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any

from aiokafka.structs import ConsumerRecord
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from streams import topics
from streams.db.connect import aconnect, mapped_errors
from streams.db.queries import query
from streams.dedupe import (
    Sighting,
    Verdict,
    classify,
    decode_sighting,
    encode_sighting,
    from_ledger,
)
from streams.errors import DatabaseUnavailable, InvalidEvent
from streams.events import AWARD_KIND, XpEvent, decode_record
from streams.metrics import Metrics
from streams.policies import to_us
from streams.policy_feed import PolicyFeed
from streams.settings import Settings
from streams.worker.checkpoint import Checkpoint
from streams.worker.state import Expiry, TableState, find_sighting, new_table
from streams.xp.fold import Totals, already_applied, decode_totals, encode_totals, fold

log = logging.getLogger(__name__)


class XpStream:
    """The XP topic's fold (:class:`streams.worker.reader.FoldStream`).

    Args:
        app: the worker's Faust app (its tables are created here).
        settings: topic, limits, dedupe horizon, database (ledger checks).
        metrics: ``xp_records_total{stage="worker"}``, freshness, ledger checks, expiry.
    """

    stage = "worker"

    def __init__(self, app: Any, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topic = settings.xp_topic
        self.dlq_topic = settings.dlq_topic
        self.totals: TableState[Totals] = TableState(
            new_table(app, settings, topics.TOTALS_TABLE), encode_totals, decode_totals)
        self.seen: TableState[Sighting] = TableState(
            new_table(app, settings, topics.DEDUPE_TABLE), encode_sighting, decode_sighting)
        self.tables: list[TableState[Any]] = [self.totals, self.seen]
        self.limits = settings.limits()
        self.feed = PolicyFeed(settings, None)
        """The season calendar (docs/design.md, "Grants: seasons"); the grant stream's feed
        exports the policies topic's metrics."""
        self._conn: Any = None
        self._ledger: dict[bytes, tuple[int, int, int, bytes] | None] = {}
        """The batch's ledger look-ups: event key (:func:`streams.dedupe.event_key`) -> its
        ledger position or None."""
        self._newest_created = 0.0
        self.expiry = Expiry(self.seen, settings.dedupe_expire_slice)
        """partition -> the last dedupe key the expiry scan read (None: start over)."""

    async def fold(self, partition: int, records: list[ConsumerRecord[bytes, bytes]],
                   checkpoint: Checkpoint, now: float) -> int:
        """Fold ``records`` of ``partition``, in order; return how many were invalid.

        Per record: validate (invalid -> DLQ); per event in it (one, or a batched record's
        events in order): classify its event id (:mod:`.dedupe`), fold a new event into its
        student's totals (:mod:`.fold`) and its season (the calendar read to the end of the
        policies topic first). Table writes go to the checkpoint's overlays: one
        changelog record per student and per event id per checkpoint.
        """
        await self.feed.catch_up()
        counts: Counter[str] = Counter()
        position = (partition, self.settings.topic_partitions)
        invalid = 0
        decoded: list[tuple[ConsumerRecord[bytes, bytes], list[XpEvent] | InvalidEvent]] = []
        for record in records:
            try:
                decoded.append((record, decode_record(record.key, record.value, self.limits,
                                                      position, record.timestamp / 1000)))
            except InvalidEvent as exc:
                decoded.append((record, exc))
        # Events past the dedupe horizon with no sighting: one ledger query for the batch
        old = now - self.settings.dedupe_horizon_seconds
        unseen_old: list[bytes] = []
        for _, events in decoded:
            if not isinstance(events, InvalidEvent):
                for ev in events:
                    if ev.created_s < old:
                        key, seen = find_sighting(self.seen, partition, ev.id, ev.student_id)
                        if seen is None:
                            unseen_old.append(key)
        self._ledger = await self.ledger_positions(unseen_old)
        try:
            for record, events in decoded:
                if isinstance(events, InvalidEvent):
                    checkpoint.dead_letter(self.dlq_topic, record, events)
                    invalid += 1
                    continue
                for index, event in enumerate(events):
                    try:
                        counts[self._take(record, event, index, now)] += 1
                    except InvalidEvent as exc:  # total_overflow: the ledger keeps it
                        checkpoint.dead_letter(self.dlq_topic, record, exc)
                        invalid += 1
        finally:
            self._ledger = {}
        counts["invalid"] += invalid
        for outcome, n in counts.items():
            if n:
                self.metrics.records.labels(self.stage, outcome).inc(n)
        return invalid

    def _take(self, record: ConsumerRecord[bytes, bytes], ev: XpEvent, index: int,
              now: float) -> str:
        """Dedupe and fold one event ``ev`` at ``index`` in ``record``; return its outcome
        (``valid``, ``redelivery``, ``duplicate``, ``conflict``). An event past the dedupe
        horizon with no sighting is judged by its ledger row, which :meth:`fold` looked up for
        the batch beforehand (no await per event). Raises :class:`InvalidEvent`
        (``total_overflow``)."""
        p, offset = record.partition, record.offset
        id_key, sighting = find_sighting(self.seen, p, ev.id, ev.student_id)
        verdict = classify(sighting, ev.fingerprint, p, offset, index)
        created = ev.created_s
        if verdict is Verdict.NEW and created < now - self.settings.dedupe_horizon_seconds:
            # every such event of the batch was looked up: a sighting only ever appears
            verdict = from_ledger(self._ledger[id_key], ev.fingerprint, p, offset, index)
            self.metrics.ledger_checks.labels(verdict.value).inc()
        if verdict is Verdict.CONFLICT:
            log.warning("conflict: event %s at %s/%s[%s] differs from its first sighting; "
                        "the first one wins", ev.id, p, offset, index, extra={"offset": offset})
            if ev.kind == AWARD_KIND:
                self.metrics.grant_conflicts.inc()
        if verdict in (Verdict.DUPLICATE, Verdict.CONFLICT):
            return str(verdict.value)
        key = ev.student_id.encode()
        current = self.totals.get(p, key)
        if already_applied(current, p, offset, index):
            # The changelog may hold this fold ahead of the durable position: write the value
            # again (downstream the version guard makes it idempotent).
            outcome = "redelivery"
            assert current is not None
            self.totals.put(p, key, current)
        else:
            calendar = self.feed.policies.calendar
            season = calendar.season_at_us(min(to_us(ev.created_at), record.timestamp * 1000)) \
                if calendar.seasons else None
            self.totals.put(p, key, fold(current, ev, p, offset, now, index, season))
            outcome = "valid"
        if sighting is None:
            sighting = Sighting(ev.fingerprint, p, offset, now, created, index)
        self.seen.put(p, id_key, sighting)
        if created > self._newest_created:
            self._newest_created = created
            self.metrics.freshness.labels(self.stage).set(created)
        return outcome

    def housekeeping(self, partitions: set[int], checkpoint: Checkpoint, now: float) -> None:
        """Drop dedupe entries past the horizon (tombstones in the next checkpoint), one slice
        at a time (:class:`streams.worker.state.Expiry`)."""
        dropped = self.expiry.run(partitions, now, self.settings.dedupe_horizon_seconds)
        if dropped:
            self.metrics.dedupe_expired.inc(dropped)
            log.debug("dedupe: expired %d entries past the horizon", dropped)

    async def close(self) -> None:
        """Close the ledger-check connection and the policy feed's consumer."""
        if self._conn is not None and not self._conn.closed:
            await self._conn.close()
        self._conn = None
        await self.feed.stop()

    async def ledger_positions(self, keys: list[bytes]
                               ) -> dict[bytes, tuple[int, int, int, bytes] | None]:
        """Look up the events ``keys`` (:func:`streams.dedupe.event_key`, 32 bytes each) in
        the ledger in one query: key -> (partition, offset, record_index, fingerprint), or None
        when absent. Retries with backoff while the database is unavailable (the reader waits;
        ``XP_DB_RETRY_MAX_SECONDS`` caps the backoff)."""
        if not keys:
            return {}
        found: dict[bytes, tuple[int, int, int, bytes] | None] = dict.fromkeys(keys)
        rows = await self._query("ledger_positions", {
            "ids": [uuid.UUID(bytes=k[:16]) for k in keys],
            "students": [uuid.UUID(bytes=k[16:]) for k in keys]})
        for event_id, student_id, p, o, i, fp in rows:
            found[event_id.bytes + student_id.bytes] = (p, o, i, bytes(fp))
        return found

    async def _query(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of the ledger query ``name``, retried with backoff while the database is
        unavailable."""
        rows: list[tuple[Any, ...]] = []
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DatabaseUnavailable),
            wait=wait_exponential_jitter(initial=0.2, max=self.settings.db_retry_max_seconds),
            reraise=True,
        ):
            with attempt:
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await aconnect(self.settings.database_url, autocommit=True)
                    with mapped_errors(self.settings.database_url):
                        cur = await self._conn.execute(query(name), params)
                        rows = list(await cur.fetchall())
                except DatabaseUnavailable:
                    self._conn = None
                    raise
        return rows
