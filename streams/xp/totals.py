"""Totals writer: the worker's totals changelog -> PostgreSQL ``xp_totals``.

Each changelog record holds a student's whole :class:`streams.xp.fold.Totals`. A batch keeps
the highest version per student and upserts it with a guard (``WHERE version < new version``),
so a row never moves backwards, whatever order or how often records are re-read.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import psycopg
from aiokafka.structs import ConsumerRecord

from streams.db.queries import query
from streams.metrics import Metrics
from streams.xp.fold import Totals, decode_totals

log = logging.getLogger(__name__)


def totals_row(student_id: str, t: Totals) -> tuple[object, ...]:
    """The ``copy_totals`` row (columns of ``xp_totals``) of one student's totals."""
    last_at = (None if t.last_game_at_us is None
               else datetime.fromtimestamp(t.last_game_at_us / 1e6, UTC))
    return (student_id, t.total_xp, t.games_played, t.last_game_type, last_at,
            datetime.fromtimestamp(t.updated_at, UTC), t.version)


class TotalsWriter:
    """Collects the newest totals per student for a batch (a :class:`streams.sink.BatchWriter`)."""

    name = "totals"

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._latest: dict[bytes, Totals] = {}
        self._added = 0

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Keep the record's totals if it is the newest seen for its student in this batch."""
        self._added += 1
        if record.key is None or record.value is None:
            return  # tombstone: totals are never deleted by the worker
        try:
            totals = decode_totals(record.value)
        except (ValueError, TypeError) as exc:
            log.error("unreadable totals at %s/%s: %s", record.partition, record.offset, exc)
            return
        current = self._latest.get(record.key)
        if current is None or totals.version > current.version:
            self._latest[record.key] = totals

    def pending(self) -> int:
        """Records added since the last take."""
        return self._added

    def take(self) -> dict[bytes, Totals]:
        """Return the batch (student key -> newest totals) and start a new batch."""
        latest = self._latest
        self.discard()
        return latest

    async def write(self, conn: psycopg.AsyncConnection, latest: dict[bytes, Totals]) -> None:
        """Upsert ``latest``, never lowering a stored version, in ``conn``'s transaction."""
        if latest:
            async with conn.cursor() as cur:
                await cur.execute(query("stage_totals"))
                async with cur.copy(query("copy_totals")) as copy:
                    for key, t in latest.items():
                        await copy.write_row(totals_row(key.decode(), t))
                await cur.execute(query("upsert_totals"), {"replace_equal": False, "force": False})
                written = max(cur.rowcount, 0)
            self.metrics.sink_rows.labels("totals", "inserted").inc(written)
            self.metrics.sink_rows.labels("totals", "present").inc(len(latest) - written)
            self.metrics.totals_newest.set(max(t.updated_at for t in latest.values()))

    def discard(self) -> None:
        """Forget the batch."""
        self._latest = {}
        self._added = 0
