"""Ledger writer: validated XP events -> ``xp_events``, exactly once per event id
(:class:`streams.sink.LedgerRowsWriter`); one row per event of a record, with its provenance
(topic, partition, offset, index in a batched record)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

import orjson
from aiokafka.structs import ConsumerRecord

from streams.events import XpEvent, decode_record
from streams.sink import LedgerRowsWriter, Row, Rows


@lru_cache(maxsize=4096)
def record_time(timestamp_ms: int) -> str:
    """A record timestamp (milliseconds since the epoch) as the ISO 8601 text of its UTC
    instant, for the ledger's ``record_ts``. Cached: the records of a busy second share few
    milliseconds, and formatting a datetime costs more than the rest of the row
    (docs/design.md, "Sinks: batches and rows")."""
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()


def ledger_row(ev: XpEvent, topic: str, partition: int, offset: int, index: int,
               timestamp_ms: int | None) -> Row:
    """The ``copy_ledger`` row (columns of ``xp_events``) of event ``ev`` read at
    ``topic``/``partition``/``offset``, ``index`` in its record, whose timestamp is
    ``timestamp_ms`` (milliseconds since the epoch; it decides the row's season with
    ``created_at``, docs/design.md "Grants: seasons"). ``created_at`` is the event's own
    RFC 3339 text and ``record_ts`` ISO 8601 text: PostgreSQL parses both to the instants the
    worker folded (docs/design.md, "Sinks: batches and rows")."""
    return (ev.id, ev.student_id, ev.kind, ev.delta, ev.word_set_id, ev.homework_id,
            ev.created_text, None if ev.metadata is None else orjson.dumps(ev.metadata).decode(),
            ev.fingerprint, topic, partition, offset, index,
            None if timestamp_ms is None else record_time(timestamp_ms))


class LedgerWriter(LedgerRowsWriter):
    """The ledger sink's writer; exports the newest ``created_at`` written (freshness)."""

    name = "ledger"
    _newest_created = 0.0

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[tuple[str, str], Row]]:
        """One row per event of the record (one, or a batched record's events)."""
        events = decode_record(record.key, record.value, self.limits,
                               (record.partition, self.partitions), record.timestamp / 1000)
        for ev in events:
            self.saw(ev.created_s)
        return [((ev.id, ev.student_id),
                 ledger_row(ev, record.topic, record.partition, record.offset, index,
                            record.timestamp))
                for index, ev in enumerate(events)]

    def wrote(self, rows: Rows) -> None:
        """Export the newest event time written, in seconds since the epoch."""
        if rows.newest_s > self._newest_created:
            self._newest_created = rows.newest_s
            self.metrics.freshness.labels(self.name).set(rows.newest_s)
