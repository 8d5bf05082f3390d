"""Action ledger sink: the action topic -> PostgreSQL ``action_events``.

The same path as the XP ledger (:mod:`streams.xp.ledger`): records are validated with the
worker's rules (:func:`streams.events.decode_action`), invalid ones skipped (the worker
dead-letters them), valid ones inserted idempotently by event id with their provenance.
"""

from __future__ import annotations

import logging

import orjson
import psycopg
from aiokafka.structs import ConsumerRecord

from streams.errors import InvalidEvent
from streams.events import ActionEvent, Limits, decode_action
from streams.metrics import Metrics
from streams.sink import copy_and_insert

log = logging.getLogger(__name__)

ActionRow = tuple[object, ...]


def action_row(ev: ActionEvent, topic: str, partition: int, offset: int) -> ActionRow:
    """The ``copy_actions`` row of ``ev`` read at ``topic``/``partition``/``offset``."""
    return (ev.id, ev.action_id, ev.profile_id, ev.source, ev.vector, ev.qol_domain,
            ev.selected_at, ev.completed_at, ev.duration, ev.mode,
            orjson.dumps(ev.metadata or {}).decode(), ev.fingerprint, topic, partition, offset)


class ActionLedgerWriter:
    """Collects action ledger rows for one batch (a :class:`streams.sink.BatchWriter`)."""

    name = "actions"

    def __init__(self, limits: Limits, partitions: int, metrics: Metrics) -> None:
        self.limits = limits
        self.partitions = partitions
        self.metrics = metrics
        self._rows: dict[str, ActionRow] = {}  # event id -> row; the first in the batch wins
        self._added = 0
        self._invalid = 0

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Validate ``record`` and keep its row; an invalid record is counted and skipped."""
        self._added += 1
        try:
            ev = decode_action(record.key, record.value, self.limits,
                               (record.partition, self.partitions), record.timestamp / 1000)
        except InvalidEvent as exc:
            self._invalid += 1
            log.debug("skipping invalid action %s/%s: %s", record.partition, record.offset, exc)
            return
        self._rows.setdefault(ev.id, action_row(ev, record.topic, record.partition,
                                                record.offset))

    def pending(self) -> int:
        """Records added since the last take (valid or not)."""
        return self._added

    def take(self) -> list[ActionRow]:
        """Return the batch's rows (each event id once) and start a new batch."""
        rows = list(self._rows.values())
        self.metrics.records.labels("actions", "valid").inc(self._added - self._invalid)
        self.metrics.records.labels("actions", "invalid").inc(self._invalid)
        self.discard()
        return rows

    async def write(self, conn: psycopg.AsyncConnection, rows: list[ActionRow]) -> None:
        """COPY ``rows`` to staging and insert the new ones, in ``conn``'s transaction."""
        if rows:
            inserted = await copy_and_insert(conn, "actions", rows)
            self.metrics.sink_rows.labels("actions", "inserted").inc(inserted)
            self.metrics.sink_rows.labels("actions", "present").inc(len(rows) - inserted)

    def discard(self) -> None:
        """Forget the batch."""
        self._rows = {}
        self._added = 0
        self._invalid = 0
