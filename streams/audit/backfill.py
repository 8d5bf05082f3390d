"""``streams backfill``: legacy XP balances as opening-balance events through the normal pipeline.

The rollout (docs/design.md, Rollout) moves ``student_progress`` (total_points, games_played,
last_game_type, last_played_at; the student's overall row has ``word_set_id`` and
``homework_id`` NULL) into ``xp_totals``.
Here each legacy row becomes one ``backfill`` XP event, published to the XP topic like any
game event, so the ledger holds it and the worker folds it:

- id: UUIDv5 of (source, generation, student), so a re-run publishes the same ids and the
  pipeline drops them as duplicates: a re-run never double counts;
- delta: the legacy total (XP); ``metadata``: source, generation, games_played,
  last_game_type, which the fold carries into ``xp_totals`` (:mod:`streams.xp.fold`);
- created_at: the legacy ``last_played_at``, or :data:`NO_PLAY_TIME` when it is NULL.

``reset``: the ledger is append-only, so earlier backfill events of the
same source are removed by compensation, not by DELETE: for each one not yet reversed, an
``adjustment`` with the opposite delta and games (id: UUIDv5 of the reversed id), then the new
backfill of the next generation. A student's reversals and new backfill are consecutive records
on the student's partition, published in one batch; a reset interrupted midway is finished by
running it again (reversal ids are deterministic). It first waits until the ledger sink has
caught up, so that it sees every earlier backfill event.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.errors import StreamsError
from streams.settings import Settings

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://xp-streams.example/backfill")
"""UUIDv5 namespace of backfill and reversal event ids."""

NO_PLAY_TIME = "1970-01-01T00:00:00Z"
"""created_at of a backfill whose legacy last_played_at is NULL: before any real game, so it
never overrides a real last_game_type."""

MAX_DELTA = 1_000_000
"""Largest delta the event schema accepts (XP); a larger legacy total is reported, not sent."""


@dataclass(frozen=True)
class LegacySource:
    """Where legacy balances live: a table and its columns (defaults: the legacy
    ``student_progress``), and the SQL condition selecting one overall row per student."""

    url: str
    table: str = "student_progress"
    student: str = "student_id"
    points: str = "total_points"
    games: str = "games_played"
    game_type: str = "last_game_type"
    played_at: str = "last_played_at"
    where: str = "word_set_id IS NULL AND homework_id IS NULL"
    name: str = "student_progress"
    """Source name in event ids and metadata: events of one name are one backfill."""

    def select(self, users: list[str] | None) -> sql.Composed:
        """The SELECT of (student, points, games, game_type, played_at) rows, by student."""
        cols = [sql.Identifier(*c.split(".")) for c in
                (self.student, self.points, self.games, self.game_type, self.played_at)]
        q = sql.SQL("SELECT {cols} FROM {table} WHERE ({where})").format(
            cols=sql.SQL(", ").join(cols), table=sql.Identifier(*self.table.split(".")),
            where=sql.SQL(self.where))  # operator-given SQL (--where), documented
        if users:
            q += sql.SQL(" AND {} = ANY(%(users)s::uuid[])").format(cols[0])
        return q + sql.SQL(" ORDER BY {}").format(cols[0])

    def rows(self, users: list[str] | None) -> Iterator[tuple[Any, ...]]:
        """Stream the legacy rows (server-side cursor).

        Raises:
            StreamsError: the table or a column does not exist (one line).
            DatabaseUnavailable: the source database cannot be reached.
        """
        with connect(self.url) as conn, mapped_errors(self.url), conn.transaction():
            try:
                with conn.cursor(name="legacy_rows") as cur:
                    cur.itersize = 5000
                    cur.execute(self.select(users), {"users": users})
                    yield from cur
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn,
                    psycopg.errors.SyntaxError) as exc:
                raise StreamsError(f"legacy source {self.table}: {exc.diag.message_primary}"
                                   ) from None


def event_id(source: str, generation: int, student: str) -> str:
    """The deterministic id of a backfill event (UUIDv5)."""
    return str(uuid.uuid5(NAMESPACE, f"backfill:{source}:{generation}:{student}"))


def reversal_id(reversed_id: str) -> str:
    """The deterministic id of the adjustment reversing backfill event ``reversed_id``."""
    return str(uuid.uuid5(NAMESPACE, f"reversal:{reversed_id}"))


@dataclass
class Plan:
    """What a backfill publishes, and what it found (counts of students and events)."""

    source: str
    generation: int
    events: list[dict[str, Any]] = field(default_factory=list)
    """Events in publishing order (reversals before the new backfill of each student)."""
    legacy_rows: int = 0
    backfills: int = 0
    reversals: int = 0
    already_in_ledger: int = 0
    """Planned ids the ledger already holds (a re-run: the pipeline drops them)."""
    rejected: list[str] = field(default_factory=list)
    """Legacy rows not sent, with the reason (one line each)."""
    resulting_totals: dict[str, int] = field(default_factory=dict)
    """Per student: xp_totals.total_xp once the events are applied (XP)."""


def plan(settings: Settings, source: LegacySource, users: list[str] | None = None,
         reset: bool = False, on_progress: Callable[[int], None] | None = None) -> Plan:
    """Read the legacy rows and the ledger's earlier backfill of ``source``; return the events
    to publish. Reads only.

    Raises:
        StreamsError: the legacy table or a column is missing.
        DatabaseUnavailable: a database cannot be reached.
    """
    users = [u.lower() for u in users] if users else None
    url = settings.database_url
    with connect(url) as conn, mapped_errors(url):
        earlier = conn.execute(query("backfill_events"),
                               {"source": source.name, "users": users}).fetchall()
        generation = max((g for *_, g in earlier), default=0)
        generation = generation + 1 if reset else max(generation, 1)
        unreversed: dict[str, list[tuple[str, int, int]]] = {}
        for eid, sid, delta, games, reversed_, _ in earlier:
            if not reversed_:
                unreversed.setdefault(str(sid), []).append((str(eid), delta, games or 0))
        result = Plan(source.name, generation)
        current: dict[str, int] = {}
        for row in source.rows(users):
            result.legacy_rows += 1
            student, points, games, game_type, played_at = row
            if on_progress is not None and result.legacy_rows % 1000 == 0:
                on_progress(result.legacy_rows)
            problem = _check(student, points, games)
            if problem:
                result.rejected.append(f"{student}: {problem}")
                continue
            sid = str(student).lower()
            if reset:
                for eid, delta, old_games in unreversed.pop(sid, []):
                    result.events.append(_reversal(source.name, sid, eid, delta, old_games))
                    result.reversals += 1
            result.events.append(_backfill(source.name, generation, sid, points or 0,
                                           games or 0, game_type, played_at))
            result.backfills += 1
            current[sid] = 0
        if reset:  # earlier backfills of students no longer in the legacy table
            for sid, olds in unreversed.items():
                for eid, delta, old_games in olds:
                    result.events.append(_reversal(source.name, sid, eid, delta, old_games))
                    result.reversals += 1
                    current[sid] = 0
        present = {str(i) for i, _ in conn.execute(query("ledger_ids_present"), {
            "ids": [e["id"] for e in result.events],
            "students": [e["student_id"] for e in result.events]})}
        for sid, total in conn.execute(query("totals_of"), {"students": list(current)}):
            current[str(sid)] = total
    for e in result.events:
        if e["id"] in present:
            result.already_in_ledger += 1
        else:
            current[e["student_id"]] += e["delta"]
    result.resulting_totals = current
    return result


def _check(student: Any, points: Any, games: Any) -> str | None:
    try:
        uuid.UUID(str(student))
    except ValueError:
        return "student id is not a UUID"
    if points is not None and not 0 <= points <= MAX_DELTA:
        return f"total_points {points} outside 0..{MAX_DELTA:,}"
    if games is not None and not 0 <= games <= MAX_DELTA:
        return f"games_played {games} outside 0..{MAX_DELTA:,}"
    return None


def _backfill(source: str, generation: int, student: str, points: int, games: int,
              game_type: str | None, played_at: datetime | None) -> dict[str, Any]:
    created = (NO_PLAY_TIME if played_at is None
               else played_at.astimezone(UTC).isoformat().replace("+00:00", "Z"))
    return {"id": event_id(source, generation, student), "student_id": student,
            "kind": "backfill", "delta": int(points), "created_at": created,
            "metadata": {"source": source, "generation": generation, "games_played": int(games),
                         "last_game_type": game_type}}


def _reversal(source: str, student: str, reversed_id: str, delta: int,
              games: int) -> dict[str, Any]:
    return {"id": reversal_id(reversed_id), "student_id": student, "kind": "adjustment",
            "delta": -delta, "created_at": NO_PLAY_TIME,
            "metadata": {"source": source, "reverses": reversed_id, "games_played": -games}}


async def publish(settings: Settings, events: list[dict[str, Any]],
                  on_progress: Callable[[int], None] | None = None) -> int:
    """Publish the planned events to the XP topic; return how many were acknowledged.

    Raises:
        PublishError: the brokers are unreachable or a record was not acknowledged (run the
            backfill again: ids are deterministic).
    """
    from streams.publish import Publisher

    async with Publisher(settings) as pub:
        return await pub.send_records(
            ((e["student_id"].encode(), orjson.dumps(e)) for e in events), on_progress)


def wait_for_pipeline(settings: Settings, timeout_s: float) -> None:
    """Wait until the ledger sink and the worker have caught up with the XP topic: a reset
    must see every earlier backfill event in the ledger.

    Raises:
        StreamsError: they did not within ``timeout_s`` seconds.
    """
    from streams.audit.reconcile import wait_past

    if not asyncio.run(wait_past(settings, timeout_s)):
        raise StreamsError(f"the pipeline did not catch up with {settings.xp_topic} within "
                           f"{timeout_s:.0f} s; a reset needs the ledger to hold every earlier "
                           "backfill event")
