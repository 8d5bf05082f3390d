"""Ledger writer: validated XP events -> ``xp_events``, exactly once per event id.

A batch is COPYed into a temporary staging table and moved with
``INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING`` in the sink's transaction, so a
re-delivered batch or a duplicate event is an idempotent hit, never a second row. Invalid
records are skipped here: the worker alone writes the DLQ.
"""

from __future__ import annotations

import logging

import orjson
import psycopg
from aiokafka.structs import ConsumerRecord

from streams.errors import InvalidEvent
from streams.events import Limits, XpEvent, decode_record
from streams.metrics import Metrics
from streams.sink import copy_and_insert

log = logging.getLogger(__name__)

LedgerRow = tuple[object, ...]


def ledger_row(ev: XpEvent, topic: str, partition: int, offset: int, index: int) -> LedgerRow:
    """The ``copy_ledger`` row (columns of ``xp_events``) of event ``ev`` read at
    ``topic``/``partition``/``offset``, ``index`` in its record."""
    return (ev.id, ev.student_id, ev.kind, ev.delta, ev.word_set_id, ev.homework_id,
            ev.created_at, None if ev.metadata is None else orjson.dumps(ev.metadata).decode(),
            ev.fingerprint, topic, partition, offset, index)



class LedgerWriter:
    """Collects ledger rows for one batch (a :class:`streams.sink.BatchWriter`)."""

    name = "ledger"

    def __init__(self, limits: Limits, partitions: int, metrics: Metrics) -> None:
        self.limits = limits
        self.partitions = partitions
        self.metrics = metrics
        self._rows: dict[str, LedgerRow] = {}  # event id -> row; the first in the batch wins
        self._added = 0
        self._invalid = 0
        self._newest_created = 0.0

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Validate ``record`` and keep a ledger row per event in it (one, or a batched
        record's events with their index); invalid records are counted and skipped."""
        self._added += 1
        try:
            events = decode_record(record.key, record.value, self.limits,
                                   (record.partition, self.partitions), record.timestamp / 1000)
        except InvalidEvent as exc:
            self._invalid += 1
            log.debug("skipping invalid record %s/%s: %s", record.partition, record.offset, exc)
            return
        for index, ev in enumerate(events):
            if ev.id in self._rows:
                continue
            self._rows[ev.id] = ledger_row(ev, record.topic, record.partition, record.offset,
                                           index)

    def pending(self) -> int:
        """Records added since the last take (valid or not)."""
        return self._added

    def take(self) -> list[LedgerRow]:
        """Return the batch's rows (each event id once) and start a new batch. Counts the
        batch's records by outcome (one metrics update per batch, not per record)."""
        rows = list(self._rows.values())
        self.metrics.records.labels("ledger", "valid").inc(self._added - self._invalid)
        self.metrics.records.labels("ledger", "invalid").inc(self._invalid)
        self.discard()
        return rows

    async def write(self, conn: psycopg.AsyncConnection, rows: list[LedgerRow]) -> None:
        """COPY ``rows`` to staging and insert the new ones, in ``conn``'s transaction."""
        if rows:
            inserted = await copy_and_insert(conn, "ledger", rows)
            self.metrics.sink_rows.labels("ledger", "inserted").inc(inserted)
            self.metrics.sink_rows.labels("ledger", "present").inc(len(rows) - inserted)
            newest = max(row[6].timestamp() for row in rows)  # type: ignore[attr-defined]
            if newest > self._newest_created:
                self._newest_created = newest
                self.metrics.freshness.labels("ledger").set(newest)

    def discard(self) -> None:
        """Forget the batch."""
        self._rows = {}
        self._added = 0
        self._invalid = 0
