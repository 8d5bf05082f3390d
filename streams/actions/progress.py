"""Progress writer: the worker's vector progress changelog -> PostgreSQL ``vector_progress``.

Each changelog record holds a whole :class:`streams.actions.fold.Progress`. A batch keeps the
row with the most folded events per key and upserts it with a guard (``WHERE applied <``
the new count), so a row never moves backwards however often records are re-read (the totals
writer's rule, :mod:`streams.xp.totals`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import psycopg
from aiokafka.structs import ConsumerRecord

from streams.actions.fold import Progress, decode_progress, iso
from streams.db.queries import query
from streams.metrics import Metrics

log = logging.getLogger(__name__)


def progress_row(p: Progress) -> tuple[object, ...]:
    """The ``copy_progress`` row of ``p``."""
    return (p.profile_id, p.vector, p.version, p.step_index, iso(p.draft_skipped_at),
            datetime.fromtimestamp(p.created_at, UTC), datetime.fromtimestamp(p.updated_at, UTC),
            p.applied)


class ProgressWriter:
    """Collects the newest progress per key for a batch (a :class:`streams.sink.BatchWriter`)."""

    name = "progress"

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._latest: dict[bytes, Progress] = {}
        self._added = 0

    def add(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Keep the record's progress if it has folded the most events for its key so far."""
        self._added += 1
        if record.key is None or record.value is None:
            return
        try:
            progress = decode_progress(record.value)
        except (ValueError, TypeError) as exc:
            log.error("unreadable progress at %s/%s: %s", record.partition, record.offset, exc)
            return
        current = self._latest.get(record.key)
        if current is None or progress.applied > current.applied:
            self._latest[record.key] = progress

    def pending(self) -> int:
        """Records added since the last take."""
        return self._added

    def take(self) -> dict[bytes, Progress]:
        """Return the batch (key -> newest progress) and start a new batch."""
        latest = self._latest
        self.discard()
        return latest

    async def write(self, conn: psycopg.AsyncConnection, latest: dict[bytes, Progress]) -> None:
        """Upsert ``latest``, never lowering a stored row, in ``conn``'s transaction."""
        if latest:
            async with conn.cursor() as cur:
                await cur.execute(query("stage_progress"))
                async with cur.copy(query("copy_progress")) as copy:
                    for p in latest.values():
                        await copy.write_row(progress_row(p))
                await cur.execute(query("upsert_progress"))
                written = max(cur.rowcount, 0)
            self.metrics.sink_rows.labels("progress", "inserted").inc(written)
            self.metrics.sink_rows.labels("progress", "present").inc(len(latest) - written)

    def discard(self) -> None:
        """Forget the batch."""
        self._latest = {}
        self._added = 0
