"""Ledger writer: validated XP events -> ``xp_events``, exactly once per event id
(:class:`streams.sink.LedgerRowsWriter`); one row per event of a record, with its provenance
(topic, partition, offset, index in a batched record)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiokafka.structs import ConsumerRecord

from streams.events import XpEvent, decode_record
from streams.sink import LedgerRowsWriter, Row


def ledger_row(ev: XpEvent, topic: str, partition: int, offset: int, index: int,
               timestamp_ms: int | None) -> Row:
    """The ``copy_ledger`` row (columns of ``xp_events``) of event ``ev`` read at
    ``topic``/``partition``/``offset``, ``index`` in its record, whose timestamp is
    ``timestamp_ms`` (milliseconds since the epoch; it decides the row's season with
    ``created_at``, docs/design.md "Grants: seasons")."""
    return (ev.id, ev.student_id, ev.kind, ev.delta, ev.word_set_id, ev.homework_id,
            ev.created_at, None if ev.metadata is None else orjson.dumps(ev.metadata).decode(),
            ev.fingerprint, topic, partition, offset, index,
            None if timestamp_ms is None else datetime.fromtimestamp(timestamp_ms / 1000, UTC))


class LedgerWriter(LedgerRowsWriter):
    """The ledger sink's writer; exports the newest ``created_at`` written (freshness)."""

    name = "ledger"
    _newest_created = 0.0

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[tuple[str, str], Row]]:
        """One row per event of the record (one, or a batched record's events)."""
        events = decode_record(record.key, record.value, self.limits,
                               (record.partition, self.partitions), record.timestamp / 1000)
        return [((ev.id, ev.student_id),
                 ledger_row(ev, record.topic, record.partition, record.offset, index,
                            record.timestamp))
                for index, ev in enumerate(events)]

    def wrote(self, rows: list[Row]) -> None:
        """Export the newest event time written, in seconds since the epoch."""
        newest = max(row[6].timestamp() for row in rows)  # type: ignore[attr-defined]
        if newest > self._newest_created:
            self._newest_created = newest
            self.metrics.freshness.labels(self.name).set(newest)
