"""The fold: apply one accepted XP event to a student's totals. Pure functions, no I/O.

Rules (the legacy ``apply_xp_event`` trigger, docs/design.md guarantee 7):
- ``total_xp`` adds ``delta`` (XP);
- ``games_played`` counts events whose kind is a game (not in
  :data:`streams.events.NON_GAME_KINDS`);
- ``last_game_type`` is the kind of the game event with the latest ``created_at``; an event that
  arrives late with an older ``created_at`` does not move it (ties: the later offset wins);
- a ``backfill`` (an opening balance from a legacy table, ``streams backfill``) carries the
  legacy ``metadata.games_played``, added to ``games_played``, and ``metadata.last_game_type``,
  taken at its ``created_at`` like a game's kind; an ``adjustment`` reversing a backfill
  carries a negative ``metadata.games_played`` (the legacy counts move to xp_totals);
- ``version`` counts applied events: the totals writer's upsert never replaces a row by one with
  a lower version, so PostgreSQL never moves backwards;
- ``seasonal_xp``/``season_id`` (docs/design.md, "Grants: seasons"): the event's season is the
  season holding ``min(created_at, record timestamp)``; the same season adds ``delta``, a newer
  one rolls over (``seasonal_xp = delta``), an older one or none leaves them alone, so
  ``seasonal_xp`` is the ledger's sum over the stored season whatever the arrival order;
- ``partition``/``offset``/``record_index`` is the source position of the last applied event
  (``record_index`` = its place in a batched record, 0 for a record of one event): a
  re-delivered event (Faust at-least-once after kill -9) at or before it is not applied again.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from streams.errors import InvalidEvent
from streams.events import XpEvent


class Totals(NamedTuple):
    """One student's totals, as kept in the Faust table and written to ``xp_totals``."""

    total_xp: int
    """Sum of applied deltas (XP)."""
    games_played: int
    """Applied events whose kind is a game."""
    last_game_type: str | None
    """Kind of the game event with the latest created_at."""
    last_game_at_us: int | None
    """created_at of that event, microseconds since the Unix epoch."""
    updated_at: float
    """Wall-clock time of the last apply, seconds since the Unix epoch."""
    version: int
    """Number of applied events; the guard of the PostgreSQL upsert."""
    partition: int
    """Source partition of the last applied event."""
    offset: int
    """Source offset of the last applied event."""
    record_index: int = 0
    """Place of that event in its record (batched records, ``xp_event_batch.v1.json``)."""
    seasonal_xp: int = 0
    """Sum of the deltas (XP) of the stored season's events."""
    season_id: str | None = None
    """The newest season an applied event fell in (None: none yet)."""
    season_start_us: int | None = None
    """Its start, microseconds since the Unix epoch (orders seasons; not in PostgreSQL)."""


SeasonKey = tuple[int, str]
"""A season as the fold sees it: (start in microseconds since the epoch, season id)."""


CARRIES_GAMES = frozenset({"backfill", "adjustment"})
"""Operator kinds whose ``metadata.games_played`` (schema-checked integer) is applied."""

EMPTY = Totals(0, 0, None, None, 0.0, 0, -1, -1)
"""Totals of a student with no applied events."""


def already_applied(totals: Totals | None, partition: int, offset: int, index: int = 0) -> bool:
    """True when the event at ``partition``/``offset``/``index`` is already folded into
    ``totals``.

    Events of one student are applied in partition order (and in record order within a
    batched record), so anything at or before the last applied position of the same partition
    is a re-delivery.
    """
    return (totals is not None and totals.partition == partition
            and (offset, index) <= (totals.offset, totals.record_index))


MAX_TOTAL_XP = 2**63 - 1
"""``xp_totals.total_xp`` is a bigint: a total beyond +-this cannot be stored."""
MAX_GAMES = 2**31 - 1
"""``xp_totals.games_played`` is an integer."""


def fold(totals: Totals | None, event: XpEvent, partition: int, offset: int, now: float,
         index: int = 0, season: SeasonKey | None = None) -> Totals:
    """Return ``totals`` with ``event`` (read at ``partition``/``offset``, ``index`` in its
    record, falling in ``season``) applied at ``now`` (seconds since the epoch).

    The caller has already decided the event is new (see :mod:`streams.dedupe`).

    Raises:
        InvalidEvent: ``total_overflow`` when the total or the games played would leave the
            range of their PostgreSQL columns (the totals writer could never store the row).
    """
    t = totals or EMPTY
    games = t.games_played
    last_type, last_at = t.last_game_type, t.last_game_at_us
    if event.is_game:
        games += 1
        at_us = int(event.created_s * 1_000_000)
        if last_at is None or at_us >= last_at:
            last_type, last_at = event.kind, at_us
    elif event.kind in CARRIES_GAMES and event.metadata:
        games += event.metadata.get("games_played") or 0
        legacy_type = event.metadata.get("last_game_type")
        at_us = int(event.created_s * 1_000_000)
        if legacy_type and event.kind == "backfill" and (last_at is None or at_us >= last_at):
            last_type, last_at = legacy_type, at_us
    total = t.total_xp + event.delta
    seasonal, season_id, season_start = t.seasonal_xp, t.season_id, t.season_start_us
    if season is not None:
        if season[1] == season_id:
            seasonal += event.delta
        elif season_start is None or season[0] > season_start:
            seasonal, season_start, season_id = event.delta, *season
    if not (-MAX_TOTAL_XP - 1 <= total <= MAX_TOTAL_XP and -MAX_GAMES - 1 <= games <= MAX_GAMES
            and -MAX_TOTAL_XP - 1 <= seasonal <= MAX_TOTAL_XP):
        raise InvalidEvent("total_overflow", f"student {event.student_id}: total {total} XP, "
                           f"{games} games would overflow xp_totals")
    return Totals(
        total_xp=total,
        games_played=games,
        last_game_type=last_type,
        last_game_at_us=last_at,
        updated_at=now,
        version=t.version + 1,
        partition=partition,
        offset=offset,
        record_index=index,
        seasonal_xp=seasonal,
        season_id=season_id,
        season_start_us=season_start,
    )


def encode_totals(totals: Totals) -> bytes:
    """Serialise totals compactly for the table changelog (a JSON array; entries written
    before ``record_index`` or the season fields existed are shorter and decode with their
    defaults)."""
    return orjson.dumps(tuple(totals))


def decode_totals(raw: bytes) -> Totals:
    """Inverse of :func:`encode_totals`. Raises ``orjson.JSONDecodeError``/``TypeError``."""
    return Totals(*orjson.loads(raw))
