"""The grant rule: ``decide(state, claim, policies)`` -> new state, outcome, award. Pure, no I/O:
the worker's grant stream, ``streams replay-grants`` and reconciliation share it, so replaying
the claims topic from offset 0 reproduces every award and outcome byte for byte
(docs/design.md, "Grants").

Time is the record timestamp, never the client's clock: the decision time ``t`` of a record is
max(its timestamp, the student's previous ``t``), in microseconds since the epoch.

- Reward day (R1-R6): ``RD(t)`` is the local date of ``t`` in the zone in effect at ``t``, never
  below the floor the zone timeline carries over a change, nor below a day already reached. A
  first claim's ``client_tz`` becomes the reward zone; a ``reward_tz_change`` takes effect at
  the end of the current reward day (a day that has begun is never shortened or moved), is
  rate-limited to ``tz_governance.max_changes_per_30_days`` (``support`` excepted), and dates it
  skips do not exist for the streak.
- One award per reward day (R5): a claim on the day of the last award is ``already_claimed``
  with that day's receipt ``uuid5(NS_GRANT, "{student}/{policy_id}/{day}")``.
- Streaks (S1-S4): missed days that exist are covered by grace tokens held before the award;
  a token is earned every ``grace.earn_every_streak_days`` streak days up to
  ``grace.max_tokens``; a lost streak burns no tokens.
- Amounts: the policy version for the reward day, merged for the season of ``t`` and the
  claim's segment (:mod:`streams.policies`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones, reset_tzpath

import orjson

from streams.errors import InvalidEvent
from streams.events import (
    AWARD_KIND,
    AWARD_SOURCE,
    Limits,
    decode_document,
    fingerprint,
    parse_timestamp,
)
from streams.policies import DEFAULT_MAX_CHANGES_PER_30_DAYS, Policies, to_us

NS_GRANT = uuid.uuid5(uuid.NAMESPACE_URL, "https://xp-streams.example/grant")
"""Namespace of the grant's deterministic ids (receipts and outcome ids)."""

POLICY_ID = "daily_login"
"""The policy daily-login claims are decided under."""

CLAIM = "daily_login_claim"
TZ_CHANGE = "reward_tz_change"
"""The two record types of the claims topic (``schemas/xp_claim.v1.json``)."""

WINDOW_US = 30 * 86_400 * 1_000_000
"""The zone-change rate limit's window (30 days, microseconds)."""

RECENT_OUTCOMES = 8
"""Outcomes kept per student by claim id: a re-delivered or resent claim gets its stored one."""

MAX_GAP_SCAN_DAYS = 400
"""Past this many days between two awards the gap is not counted date by date (no grace
covers it)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

IN_FUTURE = "claim_in_future"
"""The DLQ reason of a claim the worker refused because its record time was more than
``XP_CLAIM_MAX_AHEAD_SECONDS`` ahead of the worker's clock. The refusal depends on when the
worker read the claim, so a replay cannot decide it again: it reads these refusals from the
claims DLQ and skips the same records (:func:`streams.audit.grants.replay_claims`)."""

LATEST_CLAIM_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)
"""Claims are timed from 1970-01-01 (0: the record's timestamp) up to, not including, this
instant (ms): a record time outside is a broken clock (``timestamp_out_of_range``), and the
rule's date arithmetic stays far from ``datetime``'s year 9999 in every zone. A claim ahead of
the worker's clock is refused by the worker (``claim_in_future``, docs/design.md, "Grants")."""

reset_tzpath([])  # zones from the pinned tzdata wheel only, never the host's (byte-stable replay)


class UnknownTimeZone(ValueError):
    """A zone name that the pinned tzdata does not have (DLQ reason ``unknown_time_zone``)."""


@lru_cache(maxsize=1)
def known_zones() -> frozenset[str]:
    """Every zone name of the installed tzdata."""
    return frozenset(available_timezones())


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The zone ``name``. Raises :class:`UnknownTimeZone` unless tzdata has it."""
    if name not in known_zones():
        raise UnknownTimeZone(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimeZone(name) from exc


def tzdata_version() -> str:
    """The IANA version of the pinned tzdata wheel, recorded on every award."""
    import tzdata

    return str(tzdata.IANA_VERSION)


def to_datetime(us: int) -> datetime:
    """Microseconds since the epoch -> aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def iso(us: int) -> str:
    """RFC 3339 UTC text of ``us`` with microseconds (fixed width: byte-stable)."""
    return to_datetime(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_date(us: int, zone_name: str) -> date:
    """The calendar date of instant ``us`` in ``zone_name``."""
    return to_datetime(us).astimezone(zone(zone_name)).date()


def day_start(day: date, zone_name: str) -> int:
    """The first instant (us) whose local date in ``zone_name`` is ``day`` or later: local
    midnight, or the end of a gap that swallowed it (a date the zone skipped starts the next)."""
    wall = datetime(day.year, day.month, day.day, tzinfo=zone(zone_name))
    return to_us(wall.astimezone(UTC))


def date_exists(day: date, zone_name: str) -> bool:
    """True unless ``zone_name`` skipped ``day`` entirely (Pacific/Apia, 2011-12-30)."""
    return local_date(day_start(day, zone_name), zone_name) == day


@dataclass(frozen=True)
class GrantState:
    """One student's grant state (table ``xp_grant_state``); bounded: all R1-S4 need."""

    reward_tz: str | None = None
    """The zone of the current segment of the student's zone timeline (None: no claim yet)."""
    floor: str | None = None
    """The current segment's floor day: RD never goes below it (ISO date)."""
    reached: str | None = None
    """The highest reward day any decision reached (ISO date): RD never goes back."""
    pending_tz: str | None = None
    """A zone change waiting for the end of the current reward day."""
    pending_at: int | None = None
    """When it takes effect (us)."""
    changes: tuple[int, ...] = ()
    """Effective instants (us) of counted zone changes within the last 30 days."""
    skipped: tuple[str, ...] = ()
    """Dates skipped by zone changes, later than the last award (they do not exist)."""
    last_day: str | None = None
    """L: the last awarded reward day (ISO date)."""
    last_receipt: str | None = None
    current_streak: int = 0
    longest_streak: int = 0
    grace_tokens: int = 0
    grace_used: int = 0
    segment: str | None = None
    """The learner segment of the newest claim."""
    last_t: int = 0
    """The previous decision time (us)."""
    version: int = 0
    """Decisions applied (the writers' version guard)."""
    position: tuple[int, int] = (-1, -1)
    """(partition, offset) of the last record applied (redelivery guard)."""
    recent: tuple[tuple[str, bytes, bytes | None], ...] = ()
    """(claim id, outcome, award) of the last :data:`RECENT_OUTCOMES` claims, encoded."""

    def to_json(self) -> bytes:
        """The changelog value (orjson, sorted keys)."""
        raw = dataclasses.asdict(self)
        raw["recent"] = [[c, o.decode(), None if a is None else a.decode()]
                         for c, o, a in self.recent]
        return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, raw: bytes) -> GrantState:
        """Inverse of :meth:`to_json`. Raises ``ValueError``/``TypeError`` on bad bytes."""
        data = orjson.loads(raw)
        data["changes"] = tuple(data["changes"])
        data["skipped"] = tuple(data["skipped"])
        data["position"] = tuple(data["position"])
        data["recent"] = tuple((c, o.encode(), None if a is None else a.encode())
                               for c, o, a in data["recent"])
        return cls(**data)


@dataclass(frozen=True)
class Claim:
    """One valid record of the claims topic (schema ``xp_claim.v1.json``) with its position."""

    type: str
    id: str
    student_id: str
    timestamp_us: int
    """The record timestamp (us)."""
    partition: int = 0
    offset: int = 0
    client_tz: str | None = None
    client_time: str | None = None
    segment: str | None = None
    reward_tz: str | None = None
    requested_by: str | None = None
    fingerprint: bytes = b""
    """Content digest of the record's value (:func:`streams.events.fingerprint`): a claim id
    seen again with another one is a conflict."""

    @classmethod
    def from_json(cls, value: dict[str, Any], timestamp_ms: int, partition: int = 0,
                  offset: int = 0) -> Claim:
        """Build from a schema-valid record value. Raises :class:`UnknownTimeZone`."""
        for key in ("client_tz", "reward_tz"):
            if key in value:
                zone(value[key])
        return cls(type=value["type"], id=value["id"].lower(),
                   student_id=value["student_id"].lower(), timestamp_us=timestamp_ms * 1000,
                   partition=partition, offset=offset, client_tz=value.get("client_tz"),
                   client_time=value.get("client_time"), segment=value.get("segment"),
                   reward_tz=value.get("reward_tz"), requested_by=value.get("requested_by"))


def decode_claim(key: bytes | None, value: bytes | None, limits: Limits | int,
                 timestamp_ms: int, partition: int, offset: int,
                 partitions: int | None = None) -> Claim:
    """Decode and validate one record of the claims topic (``xp_claim.v1.json``; key = the
    student). With ``partitions`` the record must sit in its key's partition.

    Raises:
        InvalidEvent: ``oversized``, ``bad_json``, ``schema``, ``key_mismatch``,
            ``wrong_partition``, ``unknown_time_zone``, ``bad_timestamp`` (``client_time`` is
            no real instant: the hint's parse ended the worker on the same record after every
            restart) or ``timestamp_out_of_range`` (the record time is not in [1970,
            :data:`LATEST_CLAIM_MS`)).
    """
    position = None if partitions is None else (partition, partitions)
    doc = decode_document("xp_claim.v1.json", "student_id", key, value, limits, position)
    if "client_time" in doc:  # the pattern lets 2016-12-31T23:59:60Z or month 13 through
        try:
            parse_timestamp(doc["client_time"])
        except ValueError as exc:
            raise InvalidEvent("bad_timestamp",
                               f"client_time {doc['client_time']!r}: {exc}") from None
    if not 0 <= timestamp_ms < LATEST_CLAIM_MS:
        raise InvalidEvent("timestamp_out_of_range",
                           f"record time {timestamp_ms} ms is not in [1970, 2100)")
    try:
        return dataclasses.replace(Claim.from_json(doc, timestamp_ms, partition, offset),
                                   fingerprint=fingerprint(doc))
    except UnknownTimeZone as exc:
        raise InvalidEvent("unknown_time_zone", f"{exc} is not a zone of tzdata "
                           f"{tzdata_version()}") from None


@dataclass(frozen=True)
class Decision:
    """What one claim decided: the new state, the outcome record and the award (or None),
    both encoded with sorted keys (byte-stable for replay)."""

    state: GrantState
    outcome: bytes
    award: bytes | None
    redelivered: bool = False
    """The record was at or before the state's position: outputs re-emitted, state as was."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The outcome as a dict (metrics, tests)."""


def receipt(student_id: str, policy_id: str, day: date) -> str:
    """The award id of ``student_id``'s award on reward ``day`` (depends on nothing else)."""
    return str(uuid.uuid5(NS_GRANT, f"{student_id}/{policy_id}/{day.isoformat()}"))


def outcome_id(claim_id: str) -> str:
    """The outcome id of claim ``claim_id``."""
    return str(uuid.uuid5(NS_GRANT, f"outcome/{claim_id}"))


def reward_day(state: GrantState, t: int) -> date:
    """RD(t) under ``state``'s current segment (after :func:`_apply_pending`)."""
    assert state.reward_tz is not None
    day = local_date(t, state.reward_tz)
    for bound in (state.floor, state.reached):
        if bound is not None and date.fromisoformat(bound) > day:
            day = date.fromisoformat(bound)
    return day


def _apply_pending(state: GrantState, t: int) -> GrantState:
    """Apply a pending zone change whose instant ``t`` has reached: the new segment's floor is
    the last day under the old zone; the dates the new zone starts past it are skipped."""
    if state.pending_tz is None or state.pending_at is None or t < state.pending_at:
        return state
    e = state.pending_at
    last_old = reward_day(state, e - 1)
    first_new = max(local_date(e, state.pending_tz), last_old)
    skipped = list(state.skipped)
    day = last_old + timedelta(days=1)
    while day < first_new:
        skipped.append(day.isoformat())
        day += timedelta(days=1)
    return dataclasses.replace(state, reward_tz=state.pending_tz, floor=last_old.isoformat(),
                               pending_tz=None, pending_at=None, skipped=tuple(skipped))


def _existing_days_between(state: GrantState, last: date, day: date) -> int:
    """g: the dates strictly between ``last`` and ``day`` that exist for the student (not
    skipped by a zone change, not skipped by the zone itself)."""
    n = (day - last).days - 1
    if n <= 0:
        return 0
    if n > MAX_GAP_SCAN_DAYS:
        return n
    assert state.reward_tz is not None
    skipped = set(state.skipped)
    count = 0
    x = last + timedelta(days=1)
    while x < day:
        if x.isoformat() not in skipped and date_exists(x, state.reward_tz):
            count += 1
        x += timedelta(days=1)
    return count


def _hints(state: GrantState, claim: Claim, t: int, max_skew_s: int,
           segments: Iterable[str]) -> list[str]:
    """The outcome's hints: ``tz_mismatch`` (the client's zone has another offset than the
    reward zone now), ``clock_skew`` (the client clock is off by more than the policy allows),
    ``unknown_segment`` (the learner's segment has no override in the policy version: the base
    applies)."""
    hints = []
    assert state.reward_tz is not None
    if claim.client_tz is not None and claim.client_tz != state.reward_tz:
        at = to_datetime(t)
        if at.astimezone(zone(claim.client_tz)).utcoffset() != at.astimezone(
                zone(state.reward_tz)).utcoffset():
            hints.append("tz_mismatch")
    if claim.client_time is not None:
        client = datetime.fromisoformat(claim.client_time.replace("Z", "+00:00")
                                        .replace("z", "+00:00"))
        if abs(to_us(client) - t) > max_skew_s * 1_000_000:
            hints.append("clock_skew")
    if state.segment is not None and state.segment not in segments:
        hints.append("unknown_segment")
    return hints


def _encode(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def decide(state: GrantState, claim: Claim, policies: Policies) -> Decision:
    """Decide ``claim`` for its student's ``state``.

    A record at or before the state's position (a re-delivery after a crash) or a claim id
    among the last :data:`RECENT_OUTCOMES` (a client resend) gets its stored outputs again and
    leaves the state as it was, but for the position.

    Raises:
        UnknownTimeZone: not for a claim built by :meth:`Claim.from_json`, which checked its
            zones.
    """
    if (claim.partition, claim.offset) <= state.position:  # (-1, -1) before any record
        return _stored(state, claim, redelivered=True)
    for claim_id, _, _ in state.recent:
        if claim_id == claim.id:
            return _stored(dataclasses.replace(state, position=(claim.partition, claim.offset)),
                           claim, redelivered=False)
    t = max(claim.timestamp_us, state.last_t)
    state = _apply_pending(state, t)
    state = dataclasses.replace(state, last_t=t, position=(claim.partition, claim.offset),
                                version=state.version + 1,
                                changes=tuple(c for c in state.changes if c > t - WINDOW_US))
    if claim.type == CLAIM:
        state, fields, award = _claim(state, claim, t, policies)
    else:
        state, fields = _tz_change(state, claim, t, policies)
        award = None
    fields = {"id": outcome_id(claim.id), "claim_id": claim.id, "student_id": claim.student_id,
              "type": claim.type, "decided_at": iso(t), **fields}
    outcome = _encode(fields)
    encoded_award = None if award is None else _encode(award)
    recent = (*state.recent, (claim.id, outcome, encoded_award))[-RECENT_OUTCOMES:]
    state = dataclasses.replace(state, recent=recent)
    return Decision(state, outcome, encoded_award, fields=fields)


def _stored(state: GrantState, claim: Claim, redelivered: bool) -> Decision:
    for claim_id, outcome, award in state.recent:
        if claim_id == claim.id:
            return Decision(state, outcome, award, redelivered, orjson.loads(outcome))
    # Older than the recent outcomes: its effects are in the state; nothing to re-emit.
    return Decision(state, b"", None, redelivered, {})


def _claim(state: GrantState, claim: Claim, t: int,
           policies: Policies) -> tuple[GrantState, dict[str, Any], dict[str, Any] | None]:
    if state.reward_tz is None:  # R2: the first claim's zone, from the beginning of time
        state = dataclasses.replace(state, reward_tz=claim.client_tz)
    state = dataclasses.replace(state, segment=claim.segment or state.segment)
    zone_name = state.reward_tz
    assert zone_name is not None
    day = reward_day(state, t)
    state = dataclasses.replace(state, reached=day.isoformat())
    next_day = max(day_start(day + timedelta(days=1), zone_name), t + 1)
    common: dict[str, Any] = {"reward_day_id": day.isoformat(), "reward_tz": state.reward_tz,
                              "next_day_starts_at": iso(next_day)}
    version = policies.version_for(POLICY_ID, day)
    season = policies.calendar.season_of(to_datetime(t))
    if version is None:
        return state, {**common, **_streak_fields(state), "outcome": "rejected",
                       "reason": "no_policy", "hints": [], "xp": 0, "streak_day": 0,
                       "grace_consumed": 0, "receipt_id": None, "policy_id": POLICY_ID,
                       "policy_version": None, "season_id": season}, None
    definition = version.effective(season, state.segment)
    hints = _hints(state, claim, t, definition.max_client_skew_seconds,
                   version.definition.get("segment_overrides", {}))
    last = None if state.last_day is None else date.fromisoformat(state.last_day)
    if last is not None and day <= last:  # R5
        return state, {**common, **_streak_fields(state), "outcome": "already_claimed",
                       "reason": None, "hints": hints, "xp": 0, "streak_day": 0,
                       "grace_consumed": 0, "receipt_id": state.last_receipt,
                       "policy_id": POLICY_ID, "policy_version": version.version,
                       "season_id": season}, None
    grace = definition.grace
    c, k, u = state.current_streak, state.grace_tokens, state.grace_used
    consumed = 0
    if last is None:  # S1: a first award
        c, k, u = 1, int(grace["initial_tokens"]), 0
    else:
        g = _existing_days_between(state, last, day)
        if g == 0:
            c += 1
        elif g <= k:  # S2: held tokens cover the missed days
            k, u, consumed = k - g, u + g, g
            c += 1 + (g if grace["frozen_days_extend_streak"] else 0)
        else:  # the streak is lost; no token burns
            c, u = 1, 0
    every = int(grace["earn_every_streak_days"])
    if c // every > state.current_streak // every and c > state.current_streak:  # S3
        k = min(k + 1, int(grace["max_tokens"]))
    longest = max(state.longest_streak, c)
    xp = definition.amount(c, day)
    award_id = receipt(claim.student_id, POLICY_ID, day)
    state = dataclasses.replace(
        state, last_day=day.isoformat(), last_receipt=award_id, current_streak=c,
        longest_streak=longest, grace_tokens=k, grace_used=u,
        skipped=tuple(s for s in state.skipped if s > day.isoformat()))
    award = {
        "id": award_id, "student_id": claim.student_id, "kind": AWARD_KIND, "delta": xp,
        "created_at": iso(t),
        "metadata": {"source": AWARD_SOURCE, "reward_day_id": day.isoformat(),
                     "reward_tz": state.reward_tz, "streak_day": c, "grace_consumed": consumed,
                     "policy_id": POLICY_ID, "policy_version": version.version,
                     "season_id": season, "claim_id": claim.id, "tzdata": tzdata_version()},
    }
    return state, {**common, **_streak_fields(state), "outcome": "awarded", "reason": None,
                   "hints": hints, "xp": xp, "streak_day": c, "grace_consumed": consumed,
                   "receipt_id": award_id, "policy_id": POLICY_ID,
                   "policy_version": version.version, "season_id": season,
                   "tzdata": tzdata_version()}, award


def _streak_fields(state: GrantState) -> dict[str, Any]:
    return {"current_streak": state.current_streak, "longest_streak": state.longest_streak,
            "grace_tokens": state.grace_tokens}


def _tz_change(state: GrantState, claim: Claim, t: int,
               policies: Policies) -> tuple[GrantState, dict[str, Any]]:
    target = claim.reward_tz
    assert target is not None
    base = {"reward_tz": state.reward_tz, "effective_at": None}
    if state.reward_tz is None:  # no claim yet: the zone from the beginning of time (R2)
        state = dataclasses.replace(state, reward_tz=target)
        return state, {**base, "reward_tz": target, "outcome": "accepted", "reason": None}
    current = state.reward_tz
    if target == current:  # R3: a request for the current zone
        if state.pending_tz is not None:
            state = dataclasses.replace(state, pending_tz=None, pending_at=None)
            return state, {**base, "outcome": "accepted", "reason": "tz_change_cancelled"}
        return state, {**base, "outcome": "rejected", "reason": "tz_change_noop"}
    day = reward_day(state, t)
    effective = max(day_start(day + timedelta(days=1), current), t + 1)  # R3
    version = policies.version_for(POLICY_ID, day)
    limit = (version.effective(None, None).max_changes_per_30_days if version is not None
             else DEFAULT_MAX_CHANGES_PER_30_DAYS)
    counted = sum(1 for c in state.changes if t - WINDOW_US < c <= t)
    if claim.requested_by != "support" and counted + 1 > limit:  # R4
        return state, {**base, "outcome": "rejected", "reason": "tz_change_limit"}
    changes = state.changes
    if claim.requested_by != "support":  # counted once, also when it replaces a pending one
        changes = (*(c for c in changes if c != effective), effective)
    state = dataclasses.replace(state, pending_tz=target, pending_at=effective, changes=changes)
    return state, {**base, "outcome": "accepted", "reason": None, "effective_at": iso(effective),
                   "reward_tz": target}

