"""Reconciliation: ``xp_totals`` against ``SUM(xp_events.delta)`` and ``count(*)`` per student.

docs/design.md, guarantee 3: once consumer lag is 0, every student's total equals
the sum of their ledger deltas, and their applied-event count (``xp_totals.version``) equals
their ledger rows.

:func:`reconcile` is aware of lag. The worker (totals) and the ledger sink consume the same
partitions independently, so at any moment a student may differ only because one side has
applied events the other has not yet. Both sides apply the same deduplicated sequence of the
student's events in partition order, so:

- equal event counts with different XP can never be lag: confirmed at once;
- other differences are re-checked after both sides have passed the input topic's high
  watermarks taken after the first comparison (and the totals writer has caught up with the
  worker's changelog); a student who still differs on every re-check is confirmed, one who
  matches on any re-check was in flight; if the pipeline does not catch up within the wait,
  the remaining students are reported unconfirmed.

One full comparison is a single ``GROUP BY`` over the ledger (5 million rows: see the README's
figure); re-checks read only the differing students by index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from streams import lag, topology
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.errors import StreamsError
from streams.settings import Settings

log = logging.getLogger(__name__)


class Mismatch(NamedTuple):
    """A student whose totals disagree with the ledger (None: no row on that side)."""

    student_id: str
    totals_xp: int | None
    ledger_xp: int | None
    totals_events: int | None
    ledger_events: int | None

    @property
    def lag_cannot_explain(self) -> bool:
        """Same number of events on both sides but different XP: not a matter of lag."""
        return self.totals_events == self.ledger_events and self.totals_xp != self.ledger_xp


def mismatched_students(url: str) -> list[Mismatch]:
    """Return every student whose ``xp_totals`` row disagrees with the ledger, right now.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    with connect(url) as conn, mapped_errors(url):
        rows = conn.execute(query("mismatched_students")).fetchall()
    return [Mismatch(str(r[0]), *r[1:]) for r in rows]


def recheck(url: str, students: list[str]) -> list[Mismatch]:
    """Compare only ``students`` (by index); return those that still differ.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    with connect(url) as conn, mapped_errors(url):
        rows = conn.execute(query("student_balances"), {"students": students}).fetchall()
    found = [Mismatch(str(sid), txp, lxp, tev, lev) for sid, lxp, lev, txp, tev in rows]
    return [m for m in found if (m.totals_xp, m.totals_events) != (m.ledger_xp, m.ledger_events)]


@dataclass
class Reconciliation:
    """The outcome of :func:`reconcile`; :meth:`to_dict` is the ``--json`` form."""

    confirmed: list[Mismatch] = field(default_factory=list)
    """Real mismatches: not explained by events in flight."""
    unconfirmed: list[Mismatch] = field(default_factory=list)
    """Differed, and the pipeline did not catch up within the wait to re-check them."""
    in_flight: int = 0
    """Students that differed at first and matched once the pipeline caught up."""
    rechecks: int = 0
    awards_unmatched: int = 0
    """Daily-login awards (``xp_awards``) whose ledger row is missing or differs, after the
    ledger sink passed the XP topic's end (docs/design.md, "Grants")."""
    seasons_unmatched: int = 0
    """Learners whose ``xp_totals`` season and seasonal XP differ from the newest season of
    their ledger rows and its sum (docs/design.md, "Grants: seasons")."""
    seconds: float = 0.0
    """Wall time of the whole reconciliation (seconds)."""

    @property
    def exit_code(self) -> int:
        """0: consistent; 1: a confirmed mismatch (students, awards or seasons); 3:
        differences left unconfirmed."""
        if self.confirmed or self.awards_unmatched or self.seasons_unmatched:
            return 1
        return 3 if self.unconfirmed else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["confirmed"] = [m._asdict() for m in self.confirmed]
        d["unconfirmed"] = [m._asdict() for m in self.unconfirmed]
        d["exit_code"] = self.exit_code
        return d


async def wait_past(settings: Settings, timeout_s: float) -> bool:
    """Wait until the worker and the ledger sink have committed past the input topic's current
    high watermarks, then until the totals writer has caught up with the changelog
    (:func:`streams.lag.wait_past`).

    Returns:
        False when that did not happen within ``timeout_s`` seconds.
    """
    s = settings
    return await lag.wait_past(s, [topology.readers(s, s.xp_topic),
                                   topology.readers(s, s.totals_changelog_topic)], timeout_s)


def reconcile(settings: Settings, wait_s: float = 60.0, rounds: int = 3) -> Reconciliation:
    """Compare every student's totals with the ledger, re-checking what lag may explain.

    Args:
        wait_s: how long to wait, in all, for the pipeline to catch up (seconds).
        rounds: re-checks after catching up; a student confirmed must differ in every one.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
        KafkaError: the brokers cannot be reached (only when a re-check is needed).
    """
    started = time.monotonic()
    result = Reconciliation()
    found = mismatched_students(settings.database_url)
    result.confirmed = [m for m in found if m.lag_cannot_explain]
    pending = [m for m in found if not m.lag_cannot_explain]
    first = len(pending)
    deadline = started + wait_s
    while pending and result.rechecks < rounds:
        left = deadline - time.monotonic()
        if left <= 0 or not asyncio.run(wait_past(settings, left)):
            break
        result.rechecks += 1
        pending = recheck(settings.database_url, [m.student_id for m in pending])
        result.confirmed += [m for m in pending if m.lag_cannot_explain]
        pending = [m for m in pending if not m.lag_cannot_explain]
    if result.rechecks == rounds:
        result.confirmed += pending
    else:
        result.unconfirmed = pending
    result.in_flight = first - len(pending)
    result.confirmed.sort()
    result.awards_unmatched = awards_unmatched(settings, max(1.0, deadline - time.monotonic()))
    result.seasons_unmatched = seasons_unmatched(settings,
                                                 max(1.0, deadline - time.monotonic()))
    result.seconds = time.monotonic() - started
    return result


def awards_unmatched(settings: Settings, wait_s: float) -> int:
    """Awards in ``xp_awards`` without their ledger row (same id, kind and amount). An award
    reaches the ledger through the XP topic, so a difference is re-checked once the ledger sink
    has passed that topic's current end (at most ``wait_s`` seconds).

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    return _count_twice(settings, "awards_vs_ledger", lambda: lag.wait_past(
        settings, [topology.readers(settings, settings.xp_topic)], wait_s))


def seasons_unmatched(settings: Settings, wait_s: float) -> int:
    """Learners whose seasonal XP or season differs from their ledger rows (``xp_ledger``,
    seasons from ``xp_seasons``). A difference is re-checked once the worker, the ledger sink
    and the totals writer have passed their topics' current ends (at most ``wait_s`` seconds).

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    return _count_twice(settings, "seasons_vs_ledger", lambda: wait_past(settings, wait_s))


def _count_twice(settings: Settings, name: str,
                 caught_up: Callable[[], Coroutine[Any, Any, bool]]) -> int:
    """Run the counting query ``name``; when it finds something, count again once
    ``caught_up()`` says the pipeline passed what was in flight (the second count stands)."""
    def count() -> int:
        with connect(settings.database_url) as conn, mapped_errors(settings.database_url):
            row = conn.execute(query(name)).fetchone()
        return int(row[0]) if row else 0

    found = count()
    if found and asyncio.run(caught_up()):
        found = count()
    return found


def render(result: Reconciliation, console: Any, limit: int = 20) -> None:
    """Print ``result`` on a ``rich.console.Console``: one line, then up to ``limit`` students."""
    from rich.table import Table

    console.print(f"reconciled in {result.seconds:.1f} s: {len(result.confirmed):,} mismatched, "
                  f"{len(result.unconfirmed):,} unconfirmed (pipeline lagging), "
                  f"{result.in_flight:,} explained by events in flight "
                  f"({result.rechecks} re-checks)"
                  + (f"; {result.awards_unmatched:,} awards missing from the ledger"
                     if result.awards_unmatched else "")
                  + (f"; {result.seasons_unmatched:,} learners' seasonal XP differs from the "
                     "ledger" if result.seasons_unmatched else ""))
    for title, rows in (("mismatched", result.confirmed), ("unconfirmed", result.unconfirmed)):
        if not rows:
            continue
        table = Table(title=f"{title} students (first {min(limit, len(rows))} of {len(rows):,})")
        for col in ("student", "xp_totals XP", "ledger XP", "xp_totals events", "ledger events"):
            table.add_column(col)
        for m in rows[:limit]:
            table.add_row(*(str(v) for v in m))
        console.print(table)


async def run_every(settings: Settings, metrics: Any, interval_s: float, wait_s: float,
                    stop: asyncio.Event) -> None:
    """Reconcile every ``interval_s`` seconds until ``stop`` is set, exporting the counts
    through ``metrics`` (:class:`streams.metrics.ReconcileMetrics`)."""
    while not stop.is_set():
        try:
            result = await asyncio.to_thread(reconcile, settings, min(wait_s, interval_s))
        except (StreamsError, OSError) as exc:
            metrics.errors.inc()
            log.warning("reconciliation failed: %s", exc)
        else:
            metrics.mismatched.set(len(result.confirmed))
            metrics.unconfirmed.set(len(result.unconfirmed))
            metrics.duration.set(result.seconds)
            metrics.last_run.set_to_current_time()
            log.info("reconciled: %d mismatched, %d unconfirmed, %d in flight (%.1f s)",
                     len(result.confirmed), len(result.unconfirmed), result.in_flight,
                     result.seconds)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
