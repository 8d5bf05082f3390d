"""Check what the pipeline produced against a workload's expected outcome (loadgen).

Reads the real PostgreSQL tables and the real DLQ topic; used by ``streams lab demo`` and the tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from streams.audit.dlq import count_dlq
from streams.audit.reconcile import Mismatch, mismatched_students
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.lab.loadgen import ActionExpected, ClaimExpected, Expected
from streams.lab.queries import lab_query
from streams.settings import Settings


@dataclass
class Outcome:
    """What the database and the DLQ hold after a run."""

    ledger_rows: int = 0
    totals_rows: int = 0
    ledger_students: int = 0
    dlq: dict[str, int] = field(default_factory=dict)
    ledger_vs_totals: list[Mismatch] = field(default_factory=list)
    expected_vs_totals: list[str] = field(default_factory=list)
    """Students whose totals row differs from the expected outcome (with the difference)."""

    def problems(self, expected: Expected) -> list[str]:
        """Every way this outcome differs from ``expected`` (empty: all guarantees hold)."""
        found = []
        if self.ledger_rows != expected.valid_unique:
            found.append(f"ledger has {self.ledger_rows} rows, expected {expected.valid_unique}")
        if self.dlq != expected.invalid:
            found.append(f"DLQ holds {self.dlq}, expected {expected.invalid}")
        if self.ledger_vs_totals:
            found.append(f"{len(self.ledger_vs_totals)} students: xp_totals != SUM(ledger delta),"
                         f" e.g. {self.ledger_vs_totals[:3]}")
        if self.expected_vs_totals:
            found.append(f"{len(self.expected_vs_totals)} students differ from the expected "
                         f"totals, e.g. {self.expected_vs_totals[:3]}")
        return found



def read_outcome(settings: Settings, expected: Expected) -> Outcome:
    """Read ledger, totals and DLQ, and compare the totals with ``expected`` per student."""
    url = settings.database_url
    out = Outcome()
    with connect(url) as conn, mapped_errors(url):
        out.ledger_rows, out.ledger_students = conn.execute(
            lab_query("ledger_counts")).fetchone() or (0, 0)
        totals = {str(sid): [total, games, kind] for sid, total, games, kind in conn.execute(
            lab_query("totals_rows"))}
    out.totals_rows = len(totals)
    out.ledger_vs_totals = mismatched_students(url)
    for sid, want in expected.students.items():
        got = totals.get(sid)
        if got != want:
            out.expected_vs_totals.append(f"{sid}: got {got}, expected {want}")
    for sid in totals.keys() - expected.students.keys():
        out.expected_vs_totals.append(f"{sid}: unexpected totals row {totals[sid]}")
    out.dlq = asyncio.run(count_dlq(settings))
    return out


@dataclass
class ActionOutcome:
    """What the action ledger, vector progress and the action DLQ hold after a run."""

    ledger_rows: int = 0
    progress_rows: int = 0
    dlq: int = 0
    problems: list[str] = field(default_factory=list)
    """Every way this differs from the expectation (empty: exact)."""


def read_action_outcome(settings: Settings, expected: ActionExpected) -> ActionOutcome:
    """Compare ``action_events``, the folded ``vector_progress`` rows and the action DLQ with
    ``expected``."""
    url = settings.database_url
    out = ActionOutcome()
    with connect(url) as conn, mapped_errors(url):
        ids = {str(r[0]) for r in conn.execute(lab_query("action_ids"))}
        rows = conn.execute(lab_query("progress_rows")).fetchall()
    out.ledger_rows, out.progress_rows = len(ids), len(rows)
    got = {(str(p), v): [step, skipped] for p, v, step, skipped in rows}
    want = {k: list(v) for k, v in expected.progress.items()}
    out.dlq = sum(asyncio.run(count_dlq(settings, topic=settings.action_dlq_topic)).values())
    if ids != expected.ids:
        out.problems.append(f"action ledger: {len(ids - expected.ids)} unexpected, "
                            f"{len(expected.ids - ids)} missing events")
    differ = [k for k in set(got) | set(want) if got.get(k) != want.get(k)]
    if differ:
        out.problems.append(f"{len(differ)} vector_progress rows differ from the expected "
                            f"progress, e.g. {[(k, got.get(k), want.get(k)) for k in differ[:2]]}")
    if out.dlq != expected.invalid:
        out.problems.append(f"action DLQ holds {out.dlq}, expected {expected.invalid}")
    return out


@dataclass
class GrantOutcome:
    """What ``xp_awards``, ``xp_streaks`` and the ledger rows of the awards hold after a run."""

    awards: int = 0
    ledger_rows: int = 0
    """Ledger rows of the awards (kind ``daily_login``, joined by receipt)."""
    ledger_xp: int = 0
    streaks_differing: int = 0
    problems: list[str] = field(default_factory=list)
    """Every way this differs from the expectation (empty: exact)."""


def read_grant_outcome(settings: Settings, expected: ClaimExpected) -> GrantOutcome:
    """Compare the awards (per learner: days and XP), the streaks and the awards' ledger rows
    (by receipt) with ``expected``."""
    url = settings.database_url
    out = GrantOutcome()
    with connect(url) as conn, mapped_errors(url):
        got: dict[str, list[tuple[str, int]]] = {}
        for sid, day, xp in conn.execute(lab_query("awards_by_day")):
            got.setdefault(str(sid), []).append((day.isoformat(), xp))
        streaks = {str(r[0]): tuple(r[1:]) for r in conn.execute(lab_query("streak_rows"))}
        row = conn.execute(lab_query("award_ledger_rows")).fetchone()
    out.awards = sum(len(a) for a in got.values())
    out.ledger_xp, out.ledger_rows = (int(row[0]), int(row[1])) if row else (0, 0)
    if got != expected.awards:
        differ = [s for s in set(got) | set(expected.awards)
                  if got.get(s) != expected.awards.get(s)]
        out.problems.append(f"{len(differ)} learners' awards differ from the expectation, e.g. "
                            f"{[(s, got.get(s), expected.awards.get(s)) for s in differ[:1]]}")
    out.streaks_differing = sum(1 for s in set(streaks) | set(expected.streaks)
                                if streaks.get(s) != expected.streaks.get(s))
    if out.streaks_differing:
        out.problems.append(f"{out.streaks_differing} streaks differ from the expectation")
    want_xp = sum(xp for awards in expected.awards.values() for _, xp in awards)
    if out.ledger_xp != want_xp:
        out.problems.append(f"the ledger holds {out.ledger_xp} daily_login XP, expected {want_xp}")
    return out


@dataclass
class SeasonOutcome:
    """What ``xp_totals`` and ``xp_balance`` hold for seasons after a run."""

    differing: int = 0
    """Learners whose (season, seasonal XP) differs from the expectation."""
    ledger_differing: int = 0
    """Learners whose seasonal XP differs from their ledger rows (``seasons_vs_ledger``)."""
    current_season_xp: int = 0
    """The seasonal XP ``xp_balance`` shows, summed over learners (the current season's)."""
    problems: list[str] = field(default_factory=list)
    """Every way this differs from the expectation (empty: exact)."""


def read_season_outcome(settings: Settings,
                        expected: dict[str, tuple[str, int]]) -> SeasonOutcome:
    """Compare every learner's season and seasonal XP in ``xp_totals`` with ``expected``
    (student -> (season id, XP)), and with the ledger (docs/design.md, "Grants: seasons")."""
    url = settings.database_url
    out = SeasonOutcome()
    with connect(url) as conn, mapped_errors(url):
        got = {str(r[0]): (r[1], int(r[2])) for r in conn.execute(lab_query("season_rows"))}
        row = conn.execute(query("seasons_vs_ledger")).fetchone()
        out.ledger_differing = int(row[0]) if row else 0
        row = conn.execute(lab_query("current_season_xp")).fetchone()
        out.current_season_xp = int(row[0]) if row else 0
    differ = [s for s in set(got) | set(expected) if got.get(s) != expected.get(s)]
    out.differing = len(differ)
    if differ:
        example = [(s, got.get(s), expected.get(s)) for s in differ[:2]]
        out.problems.append(f"{len(differ)} learners' seasonal XP differs from the "
                            f"expectation, e.g. {example}")
    if out.ledger_differing:
        out.problems.append(f"{out.ledger_differing} learners' seasonal XP differs from "
                            "their ledger rows")
    return out
