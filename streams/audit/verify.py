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

VECTORS = ("genius", "spirit", "mind", "emotions", "body")
"""The five vectors (docs/design.md, Contracts): every profile gets a ``v1`` row for each
after the backfill."""


@dataclass
class Check:
    """One verification query and what it found."""

    name: str
    sql: str
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
              "SELECT profile_id, vector, version, count(*) FROM vector_progress "
              "GROUP BY profile_id, vector, version HAVING count(*) > 1"),
        Check("vector_progress rows without profile_id or vector",
              "SELECT id, profile_id, vector FROM vector_progress "
              "WHERE profile_id IS NULL OR vector IS NULL"),
        Check("action_events rows without action_id or profile_id",
              "SELECT id, action_id, profile_id FROM action_events "
              "WHERE action_id IS NULL OR profile_id IS NULL"),
        Check("xp_events rows without student_id, kind, delta or created_at",
              "SELECT id FROM xp_events WHERE student_id IS NULL OR kind IS NULL "
              "OR delta IS NULL OR created_at IS NULL"),
    ]
    if with_backfill:
        vectors = ", ".join(f"'{v}'" for v in VECTORS)
        found.append(Check(
            "profiles without their five v1 vector rows (run streams backfill-vectors)",
            "SELECT p.profile_id, count(DISTINCT v.vector) FROM ("
            "  SELECT profile_id FROM action_events UNION SELECT profile_id FROM vector_progress"
            ") p LEFT JOIN vector_progress v ON v.profile_id = p.profile_id "
            f"AND v.version = 'v1' AND v.vector IN ({vectors}) "
            f"GROUP BY p.profile_id HAVING count(DISTINCT v.vector) < {len(VECTORS)}"))
    return found


def verify(url: str, with_backfill: bool = True) -> tuple[list[Check], dict[str, int]]:
    """Run the checks and the row counts against the database at ``url``.

    Returns:
        The checks with their findings, and rows per table.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    found = checks(with_backfill)
    counts: dict[str, int] = {}
    with connect(url) as conn, mapped_errors(url):
        for check in found:
            rows = conn.execute(check.sql.encode()).fetchall()
            check.anomalies, check.sample = len(rows), [tuple(r) for r in rows[:5]]
        for table in ("vector_progress", "action_events", "xp_events", "xp_totals"):
            row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
            counts[table] = row[0] if row else 0
    return found, counts


def backfill_vectors(url: str) -> int:
    """The vector backfill (docs/design.md, Rollout) for every known profile; returns the rows
    inserted. Safe to repeat (``ON CONFLICT DO NOTHING``); the progress writer replaces a
    seeded row once the profile's events fold into it (``applied`` 0 is below any folded row)."""
    with connect(url) as conn, mapped_errors(url), conn.transaction():
        cur = conn.execute(
            "INSERT INTO vector_progress (profile_id, vector, step_index, version) "
            "SELECT p.profile_id, v.vector, 0, 'v1' FROM ("
            "  SELECT profile_id FROM action_events UNION SELECT profile_id FROM vector_progress"
            ") p CROSS JOIN unnest(%s::text[]) AS v(vector) "
            "ON CONFLICT (profile_id, vector, version) DO NOTHING", (list(VECTORS),))
        return max(cur.rowcount, 0)
