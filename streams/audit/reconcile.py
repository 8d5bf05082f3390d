"""Reconciliation: ``xp_totals`` against ``SUM(xp_events.delta)`` and ``count(*)`` per student.

Seed 001's check, DESIGN.md guarantee 3: once consumer lag is 0, every student's total equals
the sum of their ledger deltas, and their applied-event count equals their ledger rows.
"""

from __future__ import annotations

from typing import NamedTuple

from streams.db.connect import connect, mapped_errors
from streams.db.queries import query


class Mismatch(NamedTuple):
    """A student whose totals disagree with the ledger (None: no row on that side)."""

    student_id: str
    totals_xp: int | None
    ledger_xp: int | None
    totals_events: int | None
    ledger_events: int | None


def mismatched_students(url: str) -> list[Mismatch]:
    """Return every student whose ``xp_totals`` row disagrees with the ledger.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    with connect(url) as conn, mapped_errors(url):
        rows = conn.execute(query("mismatched_students")).fetchall()
    return [Mismatch(str(r[0]), *r[1:]) for r in rows]
