"""``streams rebuild-totals``: recompute ``xp_totals`` from the ledger, while the pipeline runs.

Each student's ledger rows are folded with :func:`streams.xp.fold.fold` in partition order
(each in the season ``xp_ledger`` gives it),
the order the worker applied them, so a rebuilt row at version ``n`` (events applied) is exactly
the worker's row at version ``n``: both are the fold of the first ``n`` events of the same
deduplicated sequence (docs/design.md, guarantees 2 and 7).

Why it stays consistent with a running worker, without stopping it: the totals writer upserts
``WHERE version < new version`` and the rebuild ``WHERE version <= rebuilt version``. Whichever
has applied more of the student's events wins, in either order of the writes; a rebuilt row
replaces one at the same version (that is how a corrupted value is mended) and a newer row from
the worker later replaces the rebuilt one. A row ahead of the ledger (higher version: the
ledger sink lags, or the version itself is corrupted) is left alone and counted, unless
``force``. Students are written in batches of ``batch_students`` per short transaction.

What it does not restore: the worker's own table state (RocksDB and its changelog topic); if
that is lost, the worker counts again from zero and its rows stay below the rebuilt versions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg

from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.events import XpEvent
from streams.policies import to_us
from streams.xp.fold import Totals, fold
from streams.xp.totals import totals_row


@dataclass
class RebuildResult:
    """What a rebuild did (counts of students and ledger rows)."""

    students: int = 0
    ledger_rows: int = 0
    written: int = 0
    """Rows inserted or changed."""
    ahead_of_ledger: int = 0
    """Rows left alone because their version is above the ledger's (see ``force``)."""
    seconds: float = 0.0


def fold_ledger(rows: Iterator[tuple[object, ...]],
                now: float) -> Iterator[tuple[str, Totals, int]]:
    """Fold ledger rows (the query ``ledger_history``: ordered by student and position) as
    the worker does; yield (student id, totals, ledger rows folded) per student."""
    current: str | None = None
    totals: Totals | None = None
    count = 0
    for (sid, eid, kind, delta, created_at, ws, hw, metadata, partition, offset, index,
         season_id, season_start) in rows:
        student = str(sid)
        if student != current:
            if current is not None and totals is not None:
                yield current, totals, count
            current, totals, count = student, None, 0
        event = XpEvent(str(eid), student, kind, delta, created_at,  # type: ignore[arg-type]
                        ws and str(ws), hw and str(hw), metadata, b"",  # type: ignore[arg-type]
                        created_at.timestamp(),  # type: ignore[attr-defined]
                        created_at.isoformat())  # type: ignore[attr-defined]
        season = None if season_id is None else (to_us(season_start), season_id)  # type: ignore[arg-type]
        totals = fold(totals, event, partition, offset, now, index, season)  # type: ignore[arg-type]
        count += 1
    if current is not None and totals is not None:
        yield current, totals, count


def rebuild_totals(url: str, students: list[str] | None = None, force: bool = False,
                   batch_students: int = 5000,
                   on_progress: Callable[[int], None] | None = None) -> RebuildResult:
    """Recompute ``xp_totals`` rows from ``xp_events`` for ``students`` (None: everyone).

    Args:
        url: PostgreSQL URL.
        force: also replace rows whose version is above the ledger's.
        on_progress: called with the ledger rows read so far after each batch.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    started = time.monotonic()
    result = RebuildResult()
    params = {"students": [s.lower() for s in students] if students else None}
    with connect(url) as read, connect(url) as write, mapped_errors(url):
        with read.transaction(), read.cursor(name="ledger_history") as cur:
            cur.itersize = 20_000
            cur.execute(query("ledger_history"), params)
            batch: list[tuple[object, ...]] = []
            for student, totals, rows in fold_ledger(iter(cur), time.time()):
                batch.append(totals_row(student, totals))
                result.students += 1
                result.ledger_rows += rows
                if len(batch) >= batch_students:
                    _write(write, batch, force, result)
                    batch.clear()
                    if on_progress is not None:
                        on_progress(result.ledger_rows)
            _write(write, batch, force, result)
    result.seconds = time.monotonic() - started
    return result


def _write(conn: psycopg.Connection, batch: list[tuple[object, ...]], force: bool,
           result: RebuildResult) -> None:
    if not batch:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("stage_totals"))
        with cur.copy(query("copy_totals")) as copy:
            for row in batch:
                copy.write_row(row)
        if not force:
            ahead = cur.execute(query("totals_ahead_of_ledger")).fetchone()
            result.ahead_of_ledger += ahead[0] if ahead else 0
        cur.execute(query("upsert_totals"), {"replace_equal": True, "force": force})
        result.written += max(cur.rowcount, 0)
