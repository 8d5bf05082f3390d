"""``streams compare-xp``: legacy balance vs ledger sum per student, for the rollout period.

During the rollout the comparison runs daily and its expected delta is 0 (docs/design.md,
Rollout): it compares the legacy value (``student_progress.total_points`` by default, see
:class:`streams.audit.backfill.LegacySource`) with ``SUM(xp_events.delta)`` per student.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.audit.backfill import LegacySource
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query


@dataclass
class Comparison:
    """The report: students compared, and those whose delta is not 0 (XP)."""

    compared: int = 0
    differing: list[dict[str, Any]] = field(default_factory=list)
    """``{"student_id", "legacy_xp", "ledger_xp", "delta"}`` with delta = ledger - legacy."""

    @property
    def matching(self) -> int:
        """Students whose delta is 0."""
        return self.compared - len(self.differing)


def compare(ledger_url: str, source: LegacySource, users: list[str] | None = None,
            active_since: float | None = None, batch: int = 5000) -> Comparison:
    """Compare each legacy row's points with the student's ledger sum.

    Args:
        active_since: only students whose legacy ``last_played_at`` is at or after this
            instant (seconds since the epoch).

    Raises:
        StreamsError: the legacy table or a column is missing.
        DatabaseUnavailable: a database cannot be reached.
    """
    result = Comparison()
    pending: dict[str, int] = {}
    with connect(ledger_url) as conn, mapped_errors(ledger_url):

        def flush() -> None:
            rows = conn.execute(query("ledger_sums"), {"students": list(pending)}).fetchall()
            sums = {str(sid): int(total) for sid, total in rows}
            for sid, legacy in pending.items():
                ledger = sums.get(sid, 0)
                if ledger != legacy:
                    result.differing.append({"student_id": sid, "legacy_xp": legacy,
                                             "ledger_xp": ledger, "delta": ledger - legacy})
            pending.clear()

        for student, points, _, _, played_at in source.rows(users):
            if active_since is not None and (
                    played_at is None or played_at.timestamp() < active_since):
                continue
            result.compared += 1
            pending[str(student).lower()] = int(points or 0)
            if len(pending) >= batch:
                flush()
        flush()
    return result
