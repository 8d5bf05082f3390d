"""``streams verify``: the action-events migration plan's verification queries, as checks
that pass or fail.

Each check is a query whose rows are the anomalies (empty: the check passes): duplicate
progress keys, rows missing required fields, profiles without their five vector rows after the
backfill (the plan's "Backfill validation"). Row counts are reported alongside.
:func:`backfill_vectors` is the plan's backfill step 1: a ``v1`` row at step 0 for every vector
of every known profile (those with action events or progress), where none exists yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.db.connect import connect, mapped_errors
from streams.db.queries import query

VECTORS = ("genius", "spirit", "mind", "emotions", "body")
"""The five vectors (docs/design.md, Contracts): every profile gets a ``v1`` row for each
after the backfill."""


@dataclass
class Check:
    """One verification query (named in ``queries.sql``) and what it found."""

    name: str
    query_name: str
    anomalies: int = 0
    sample: list[tuple[object, ...]] = field(default_factory=list)
    """Up to 5 of the offending rows."""

    @property
    def ok(self) -> bool:
        """True when the query found nothing."""
        return self.anomalies == 0


def checks(with_backfill: bool = True) -> list[Check]:
    """The checks, in the plan's order; ``with_backfill`` adds the five-vectors check."""
    found = [
        Check("duplicate vector_progress keys (profile_id, vector, version)",
              "verify_duplicate_progress_keys"),
        Check("vector_progress rows without profile_id or vector",
              "verify_progress_missing_fields"),
        Check("action_events rows without action_id or profile_id",
              "verify_actions_missing_fields"),
        Check("xp_events rows without student_id, kind, delta or created_at",
              "verify_ledger_missing_fields"),
    ]
    if with_backfill:
        found.append(Check(
            "profiles without their five v1 vector rows (run streams backfill-vectors)",
            "verify_five_vectors"))
    return found


def verify(url: str, with_backfill: bool = True) -> tuple[list[Check], dict[str, int]]:
    """Run the checks and the row counts against the database at ``url``.

    Returns:
        The checks with their findings, and rows per table.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    found = checks(with_backfill)
    params = {"vectors": list(VECTORS)}
    with connect(url) as conn, mapped_errors(url):
        for check in found:
            rows = conn.execute(query(check.query_name), params).fetchall()
            check.anomalies, check.sample = len(rows), [tuple(r) for r in rows[:5]]
        row = conn.execute(query("verify_row_counts")).fetchone() or (0, 0, 0, 0)
    counts = dict(zip(("vector_progress", "action_events", "xp_events", "xp_totals"), row,
                      strict=True))
    return found, counts


def backfill_vectors(url: str) -> int:
    """The vector backfill (docs/design.md, Rollout) for every known profile; returns the rows
    inserted. Safe to repeat (``ON CONFLICT DO NOTHING``); the progress writer replaces a
    seeded row once the profile's events fold into it (``applied`` 0 is below any folded row)."""
    with connect(url) as conn, mapped_errors(url), conn.transaction():
        cur = conn.execute(query("backfill_vectors"), {"vectors": list(VECTORS)})
        return max(cur.rowcount, 0)
