"""The policies topic's records as data: grant policy versions (chosen by reward day,
merge-patched overrides, integer amounts) and the season calendar. Pure functions, no I/O
(docs/design.md, "Grants: policies" and "Grants: seasons"). A ground module: the grant stream
decides amounts with it, the XP stream the season of an event.

A policy version is an immutable JSON document (schema ``xp_policy.v1.json``). The version for
reward day D is the one with the largest ``effective_day <= D``, so exactly one version applies
to a day and a learner's day never changes version part way through. Its effective definition
for (season, segment) is the base merge-patched (RFC 7396) with ``season_overrides[season]``,
then ``segment_overrides[segment]``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

DEFAULT_GRACE = {"initial_tokens": 1, "max_tokens": 2, "earn_every_streak_days": 7,
                 "frozen_days_extend_streak": False}
"""Grace defaults when a definition leaves them out (docs/design.md, "Grants: streaks")."""

DEFAULT_MAX_CHANGES_PER_30_DAYS = 2
"""Reward-zone changes a learner may make in any 30 days when the policy says nothing."""

DEFAULT_MAX_CLIENT_SKEW_SECONDS = 900
"""Client clock skew (seconds) past which an outcome carries the ``clock_skew`` hint."""

PREVIEW_STREAK_DAYS = 400
"""Streak days every merged definition is checked over (``1 <= xp <= cap``)."""

FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2099, 12, 31)
"""A policy's effective day and its windows' days lie in [FIRST_DAY, LAST_DAY]: the days a
claim can have (record times in [1970, 2100), :mod:`streams.grant.decide`). A day near
9999-12-31 made the check's date arithmetic raise ``OverflowError``, which ended the worker
on the same policies record after every restart."""


class PolicyError(ValueError):
    """A policy or calendar record breaks a rule beyond its schema; the message says which."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch of ``patch`` onto ``target`` (neither is changed)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass(frozen=True)
class Definition:
    """One effective definition (a version merged for a season and a segment)."""

    raw: dict[str, Any]
    """The merged JSON object."""

    @property
    def base_xp(self) -> int:
        return int(self.raw["base_xp"])

    @property
    def cap(self) -> int | None:
        value = self.raw.get("caps", {}).get("max_award_xp")
        return None if value is None else int(value)

    @property
    def grace(self) -> dict[str, Any]:
        return {**DEFAULT_GRACE, **self.raw.get("grace", {})}

    @property
    def max_changes_per_30_days(self) -> int:
        value = self.raw.get("tz_governance", {}).get("max_changes_per_30_days")
        return DEFAULT_MAX_CHANGES_PER_30_DAYS if value is None else int(value)

    @property
    def max_client_skew_seconds(self) -> int:
        value = self.raw.get("hints", {}).get("max_client_skew_seconds")
        return DEFAULT_MAX_CLIENT_SKEW_SECONDS if value is None else int(value)

    def curve_pct(self, streak_day: int) -> int:
        """The streak curve's percent at ``streak_day`` (>= 1)."""
        curve = self.raw["streak_curve"]
        if curve["type"] == "linear":
            grown = curve["start_pct"] + curve["step_pct"] * (streak_day - 1)
            return int(min(curve["max_pct"], grown))
        pct = 100
        for step in curve["steps"]:
            if step["from_day"] <= streak_day:
                pct = int(step["pct"])
        return pct

    def _window(self, day: date) -> dict[str, Any] | None:
        """The window that applies on reward ``day``: the first of the matching ones with the
        largest percent (windows do not stack), None when none matches."""
        best: dict[str, Any] | None = None
        iso_day = day.isoformat()
        for window in self.raw.get("windows", []):
            if "days_of_week" in window and day.isoweekday() not in window["days_of_week"]:
                continue
            if "from_day" in window and iso_day < window["from_day"]:
                continue
            if "to_day" in window and iso_day > window["to_day"]:
                continue
            if best is None or int(window["pct"]) > int(best["pct"]):
                best = window
        return best

    def window_pct(self, day: date) -> int:
        """The largest percent of the windows matching reward ``day`` (100 when none)."""
        window = self._window(day)
        return 100 if window is None else int(window["pct"])

    def window_of(self, day: date) -> str | None:
        """The id of the window whose percent applies on reward ``day`` (None: none)."""
        window = self._window(day)
        return None if window is None else str(window["id"])

    def window_days(self, effective_day: date) -> dict[str | None, date]:
        """One reward day on or after ``effective_day`` for each way the windows can apply:
        window id (None: no window) -> the first such day found. The days looked at are the
        week from ``effective_day`` and the week from each window's start, so every window
        that can apply, and the absence of one when it can occur, is represented."""
        starts = [effective_day]
        for window in self.raw.get("windows", []):
            if "from_day" in window:
                starts.append(max(effective_day, date.fromisoformat(window["from_day"])))
        out: dict[str | None, date] = {}
        for start in sorted(set(starts)):
            for n in range(7):
                day = start + timedelta(days=n)
                out.setdefault(self.window_of(day), day)
        return out

    def amount(self, streak_day: int, day: date) -> int:
        """XP of an award on reward ``day`` at ``streak_day`` (integer arithmetic):
        ``min(cap, base * curve * window // 10000 + milestone)``."""
        bonus = sum(int(m["bonus_xp"]) for m in self.raw.get("milestones", [])
                    if m["streak_day"] == streak_day)
        xp = self.base_xp * self.curve_pct(streak_day) * self.window_pct(day) // 10000 + bonus
        cap = self.cap
        return xp if cap is None else min(cap, xp)


@dataclass(frozen=True)
class PolicyVersion:
    """One published version of a policy (a ``policy`` record of the policies topic)."""

    policy_id: str
    version: int
    effective_day: date
    definition: dict[str, Any]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> PolicyVersion:
        """Build from a schema-valid ``policy`` record. Raises :class:`PolicyError`."""
        version = cls(record["policy_id"], int(record["version"]),
                      date.fromisoformat(record["effective_day"]), record["definition"])
        days = [version.effective_day, *(date.fromisoformat(w[k]) for _, w in _windows(version)
                                         for k in ("from_day", "to_day") if k in w)]
        if any(not FIRST_DAY <= day <= LAST_DAY for day in days):
            raise PolicyError(f"{version.policy_id} v{version.version}: its days must lie in "
                              f"[{FIRST_DAY}, {LAST_DAY}] (the days claims can have), not "
                              f"{min(days)} .. {max(days)}")
        version.check()
        return version

    def effective(self, season: str | None, segment: str | None) -> Definition:
        """The definition for ``season`` and ``segment`` (an unknown one: no override)."""
        raw = {k: v for k, v in self.definition.items()
               if k not in ("season_overrides", "segment_overrides")}
        if season is not None:
            raw = merge_patch(raw, self.definition.get("season_overrides", {}).get(season, {}))
        if segment is not None:
            raw = merge_patch(raw, self.definition.get("segment_overrides", {}).get(segment, {}))
        return Definition(raw)

    def combinations(self) -> list[tuple[str | None, str | None]]:
        """Every (season, segment) pair with an override of its own, plus the base."""
        seasons = [None, *self.definition.get("season_overrides", {})]
        segments = [None, *self.definition.get("segment_overrides", {})]
        return [(s, g) for s in seasons for g in segments]

    def check(self) -> None:
        """The rules a schema cannot say, for every merged combination: curve steps sorted,
        unique, from day 1; windows' from_day <= to_day; ``1 <= xp <= cap`` over streak days
        1..:data:`PREVIEW_STREAK_DAYS` on a day of every window that can apply and on a day of
        none (:meth:`Definition.window_days`): an amount that rounds to 0 XP inside a window
        would be an award the ledger refuses. Raises :class:`PolicyError`."""
        for season, segment in self.combinations():
            where = f"{self.policy_id} v{self.version} (season {season}, segment {segment})"
            d = self.effective(season, segment)
            curve = d.raw["streak_curve"]
            if curve["type"] == "table":
                days = [s["from_day"] for s in curve["steps"]]
                if days[0] != 1 or days != sorted(set(days)):
                    raise PolicyError(f"{where}: streak_curve steps must be sorted, unique and "
                                      f"start at from_day 1, not {days}")
            for window in d.raw.get("windows", []):
                if window.get("from_day", "") > window.get("to_day", "9999"):
                    raise PolicyError(f"{where}: window {window['id']} ends before it starts")
            grace = d.grace
            if grace["initial_tokens"] > grace["max_tokens"]:
                raise PolicyError(f"{where}: grace initial_tokens > max_tokens")
            for window, reward_day in d.window_days(self.effective_day).items():
                for day in range(1, PREVIEW_STREAK_DAYS + 1):
                    xp = d.amount(day, reward_day)
                    if xp < 1:
                        inside = "no window" if window is None else f"window {window}"
                        raise PolicyError(f"{where}: streak day {day} would award {xp} XP on "
                                          f"{reward_day} ({inside})")


def _windows(version: PolicyVersion) -> list[tuple[str | None, dict[str, Any]]]:
    """Every window of ``version``: (season or segment override, or None; the window)."""
    d = version.definition
    out: list[tuple[str | None, dict[str, Any]]] = [(None, w) for w in d.get("windows", [])]
    for overrides in ("season_overrides", "segment_overrides"):
        for name, patch in d.get(overrides, {}).items():
            if isinstance(patch, dict):
                out += [(name, w) for w in patch.get("windows") or []]
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(instant: datetime) -> int:
    """Aware datetime -> microseconds since the epoch (exact: no float on the way)."""
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Season:
    """A season: the half-open UTC interval [starts_at, ends_at)."""

    season_id: str
    starts_at: datetime
    ends_at: datetime


@dataclass
class Calendar:
    """The newest season calendar (a ``season_calendar`` record); empty: no seasons."""

    version: int = 0
    seasons: list[Season] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Calendar:
        """Build from a schema-valid ``season_calendar`` record. Raises :class:`PolicyError`
        (an interval that ends before it starts, overlapping seasons, a repeated id)."""
        seasons = sorted((Season(s["season_id"], _instant(s["starts_at"]), _instant(s["ends_at"]))
                          for s in record["seasons"]), key=lambda s: s.starts_at)
        ids = [s.season_id for s in seasons]
        if len(set(ids)) != len(ids):
            raise PolicyError(f"season calendar v{record['version']}: repeated season id")
        for s in seasons:
            if s.ends_at <= s.starts_at:
                raise PolicyError(f"season {s.season_id} ends before it starts")
        for a, b in zip(seasons, seasons[1:], strict=False):
            if b.starts_at < a.ends_at:
                raise PolicyError(f"seasons {a.season_id} and {b.season_id} overlap")
        return cls(int(record["version"]), seasons)

    def season_of(self, instant: datetime) -> str | None:
        """The season holding ``instant`` (None: before, after or between seasons)."""
        found = self.season_at_us(to_us(instant))
        return found[1] if found else None

    @cached_property
    def _starts_us(self) -> list[int]:
        return [to_us(s.starts_at) for s in self.seasons]

    @cached_property
    def _ends_us(self) -> list[int]:
        return [to_us(s.ends_at) for s in self.seasons]

    def season_at_us(self, instant_us: int) -> tuple[int, str] | None:
        """(start in microseconds since the epoch, season id) of the season holding
        ``instant_us`` (microseconds since the epoch), or None. The start orders seasons:
        they never overlap (docs/design.md, "Grants: seasons")."""
        i = bisect.bisect_right(self._starts_us, instant_us) - 1
        if i >= 0 and instant_us < self._ends_us[i]:
            return self._starts_us[i], self.seasons[i].season_id
        return None

    def changes_before(self, newer: Calendar, instant: datetime) -> list[str]:
        """Seasons that ``newer`` adds, changes or drops compared with this calendar and that
        start (in either) before ``instant``: a season that has started is immutable, and a
        season is changed or added at least the publish lead before it starts, so that every
        decider has the calendar before an event can fall in it."""
        old = {s.season_id: s for s in self.seasons}
        new = {s.season_id: s for s in newer.seasons}
        return sorted(sid for sid in old.keys() | new.keys() if old.get(sid) != new.get(sid)
                      and min(s.starts_at for s in (old.get(sid), new.get(sid)) if s) < instant)


@dataclass
class Policies:
    """Every policy version and the season calendar the grant stream knows, in publish order."""

    versions: dict[str, list[PolicyVersion]] = field(default_factory=dict)
    """policy_id -> versions sorted by effective_day (and version)."""
    calendar: Calendar = field(default_factory=Calendar)

    def add(self, version: PolicyVersion) -> None:
        """Add ``version``. Raises :class:`PolicyError` when it edits a published version,
        reuses an effective_day of its policy, or breaks version order by effective_day."""
        known = self.versions.setdefault(version.policy_id, [])
        for v in known:
            if v.version == version.version:
                if v == version:
                    return  # the same record again (compaction, replay)
                raise PolicyError(f"{version.policy_id} v{version.version} is published; "
                                  "publish a new version instead of editing it")
            if v.effective_day == version.effective_day:
                raise PolicyError(f"{version.policy_id}: v{v.version} already takes effect on "
                                  f"{v.effective_day}")
            if (v.version < version.version) != (v.effective_day < version.effective_day):
                raise PolicyError(f"{version.policy_id}: versions must increase with "
                                  f"effective_day (v{v.version} from {v.effective_day})")
        known.append(version)
        known.sort(key=lambda v: v.effective_day)

    def version_for(self, policy_id: str, day: date) -> PolicyVersion | None:
        """The version of ``policy_id`` for reward ``day``: the largest effective_day <= day."""
        known = self.versions.get(policy_id, [])
        i = bisect.bisect_right([v.effective_day for v in known], day) - 1
        return known[i] if i >= 0 else None


def publish_deadline(effective_day: date, lead_seconds: float) -> datetime:
    """The latest record timestamp a version effective on ``effective_day`` may carry: the
    start of that day at UTC+14 (the earliest any learner reaches it) minus ``lead_seconds``."""
    midnight_utc = datetime.combine(effective_day, datetime.min.time(), UTC)
    return midnight_utc - timedelta(hours=14, seconds=lead_seconds)


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return value.astimezone(UTC)
