"""The grant rule's scenario table (docs/design.md, "Grants"): each row as a test of the pure
``decide`` under policy P (base 10 XP; curve 100% from day 1, 120% from 3, 150% from 7;
milestones +50 at 7 and +200 at 30; cap 100). XP by streak day: 1-2 = 10, 3-6 = 12, 7 = 65,
8+ = 15. Times are record timestamps in UTC, year 2026."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from streams.errors import InvalidEvent
from streams.events import Limits, decode_record, schema_validator
from streams.grant.decide import (
    NS_GRANT,
    Claim,
    Decision,
    GrantState,
    UnknownTimeZone,
    decide,
    receipt,
    to_us,
)
from streams.policies import Calendar, Policies, PolicyVersion, publish_deadline
from streams.policy_feed import apply, refusal

P: dict[str, Any] = {
    "base_xp": 10,
    "streak_curve": {"type": "table", "steps": [{"from_day": 1, "pct": 100},
                                                {"from_day": 3, "pct": 120},
                                                {"from_day": 7, "pct": 150}]},
    "milestones": [{"streak_day": 7, "bonus_xp": 50}, {"streak_day": 30, "bonus_xp": 200}],
    "caps": {"max_award_xp": 100},
}


def policies(definition: dict[str, Any] | None = None, *more: PolicyVersion) -> Policies:
    out = Policies()
    out.add(PolicyVersion("daily_login", 1, datetime(2026, 1, 1).date(), definition or P))
    for version in more:
        out.add(version)
    return out


class Student:
    """One student's claims decided in offset order on partition 0."""

    def __init__(self, zone: str | None = None, pol: Policies | None = None) -> None:
        self.id = str(uuid.uuid4())
        self.zone = zone
        self.state = GrantState()
        self.policies = pol or policies()
        self.offset = 0

    def _decide(self, when: str, value: dict[str, Any]) -> Decision:
        ts = datetime.fromisoformat(when.replace("Z", "+00:00"))
        claim = Claim.from_json({"student_id": self.id, **value}, to_us(ts) // 1000, 0,
                                self.offset)
        self.offset += 1
        decision = decide(self.state, claim, self.policies)
        self.state = decision.state
        # every output keeps its contract: the outcome schema, an ordinary XP event
        schema_validator("xp_claim_outcome.v1.json")(orjson.loads(decision.outcome))
        if decision.award is not None:
            (event,) = decode_record(self.id.encode(), decision.award, 65536)
            assert (event.kind, event.id) == ("daily_login", decision.fields["receipt_id"])
        return decision

    def claim(self, when: str, claim_id: str | None = None, **extra: Any) -> dict[str, Any]:
        value = {"type": "daily_login_claim", "id": claim_id or str(uuid.uuid4()),
                 "client_tz": self.zone, **extra}
        return self._decide(when, value).fields

    def change(self, when: str, zone: str, by: str = "learner") -> dict[str, Any]:
        return self._decide(when, {"type": "reward_tz_change", "id": str(uuid.uuid4()),
                                   "reward_tz": zone, "requested_by": by}).fields


def awards(outcomes: list[dict[str, Any]]) -> list[tuple[str, str | None, int]]:
    return [(o["outcome"], o["reward_day_id"] if o["outcome"] != "already_claimed" else None,
             o["xp"]) for o in outcomes]


def test_1_new_york_spring_forward() -> None:
    a = Student("America/New_York")
    got = [a.claim(t) for t in ("2026-03-08T04:30:00Z", "2026-03-08T05:30:00Z",
                                "2026-03-09T03:59:00Z", "2026-03-09T04:10:00Z")]
    assert awards(got) == [("awarded", "2026-03-07", 10), ("awarded", "2026-03-08", 10),
                           ("already_claimed", None, 0), ("awarded", "2026-03-09", 12)]
    s = a.state
    assert (s.current_streak, s.longest_streak, s.grace_tokens) == (3, 3, 1)


def test_2_new_york_fall_back() -> None:
    b = Student("America/New_York")
    got = [b.claim(t) for t in ("2026-10-31T16:00:00Z", "2026-11-01T05:30:00Z",
                                "2026-11-01T06:30:00Z", "2026-11-02T04:59:00Z",
                                "2026-11-02T05:01:00Z")]
    assert awards(got) == [("awarded", "2026-10-31", 10), ("awarded", "2026-11-01", 10),
                           ("already_claimed", None, 0), ("already_claimed", None, 0),
                           ("awarded", "2026-11-02", 12)]
    assert b.state.current_streak == 3


def test_3_stockholm_spring() -> None:
    c = Student("Europe/Stockholm")
    got = [c.claim(t) for t in ("2026-03-28T22:59:00Z", "2026-03-28T23:00:30Z",
                                "2026-03-29T21:59:00Z", "2026-03-29T22:00:00Z")]
    assert awards(got) == [("awarded", "2026-03-28", 10), ("awarded", "2026-03-29", 10),
                           ("already_claimed", None, 0), ("awarded", "2026-03-30", 12)]
    assert c.state.current_streak == 3


def test_4_stockholm_fall() -> None:
    d = Student("Europe/Stockholm")
    got = [d.claim(t) for t in ("2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z",
                                "2026-10-25T22:59:00Z", "2026-10-25T23:00:00Z")]
    assert awards(got) == [("awarded", "2026-10-25", 10), ("already_claimed", None, 0),
                           ("already_claimed", None, 0), ("awarded", "2026-10-26", 10)]
    assert d.state.current_streak == 2


def test_7_zone_governance() -> None:
    g = Student("Europe/Stockholm")
    g.claim("2026-05-30T08:00:00Z")
    first = g.change("2026-06-01T09:00:00Z", "Europe/London")
    assert (first["outcome"], first["effective_at"]) == ("accepted", "2026-06-01T22:00:00.000000Z")
    second = g.change("2026-06-05T09:00:00Z", "Europe/Stockholm")
    assert (second["outcome"], second["effective_at"]) == ("accepted",
                                                           "2026-06-05T23:00:00.000000Z")
    third = g.change("2026-06-10T09:00:00Z", "Europe/Helsinki")
    assert (third["outcome"], third["reason"]) == ("rejected", "tz_change_limit")
    fourth = g.change("2026-07-02T09:00:00Z", "Europe/Helsinki")
    assert (fourth["outcome"], fourth["reason"]) == ("accepted", None)


def test_7_support_bypasses_the_limit_but_not_the_boundary() -> None:
    g = Student("Europe/Stockholm")
    g.claim("2026-05-30T08:00:00Z")
    g.change("2026-06-01T09:00:00Z", "Europe/London")
    g.change("2026-06-05T09:00:00Z", "Europe/Stockholm")
    by_support = g.change("2026-06-10T09:00:00Z", "Europe/Helsinki", by="support")
    assert (by_support["outcome"], by_support["effective_at"]) == (
        "accepted", "2026-06-10T22:00:00.000000Z")


def _h_through_day_seven() -> tuple[Student, list[dict[str, Any]]]:
    h = Student("Europe/Stockholm")
    got = [h.claim(f"2026-06-0{d}T08:00:00Z") for d in range(1, 7)]
    got.append(h.claim("2026-06-08T08:00:00Z"))
    return h, got


def test_8_grace_covers_a_missed_day_and_a_token_is_earned_at_seven() -> None:
    h, got = _h_through_day_seven()
    assert [o["xp"] for o in got] == [10, 10, 12, 12, 12, 12, 65]
    day7 = got[-1]
    assert (day7["streak_day"], day7["grace_consumed"], day7["grace_tokens"]) == (7, 1, 1)
    assert h.state.grace_used == 1


def test_9_a_gap_past_the_tokens_restarts_the_streak_and_burns_nothing() -> None:
    h, _ = _h_through_day_seven()
    got = h.claim("2026-06-11T08:00:00Z")
    assert (got["xp"], got["streak_day"], got["grace_consumed"]) == (10, 1, 0)
    s = h.state
    assert (s.current_streak, s.longest_streak, s.grace_tokens, s.grace_used) == (1, 7, 1, 0)


def test_10_two_tokens_cover_two_missed_days() -> None:
    i = Student("UTC")
    got = [i.claim(f"2026-07-{d:02d}T12:00:00Z") for d in range(1, 15)]
    assert got[6]["grace_tokens"] == 2 and got[13]["grace_tokens"] == 2
    day = i.claim("2026-07-17T12:00:00Z")
    assert (day["streak_day"], day["xp"], day["grace_consumed"]) == (15, 15, 2)
    assert (i.state.grace_tokens, i.state.grace_used) == (0, 2)


def test_11_parallel_claims_and_a_resend() -> None:
    j = Student("UTC")
    j1 = str(uuid.uuid4())
    first = j._decide("2026-05-05T08:00:00Z", {"type": "daily_login_claim", "id": j1,
                                                "client_tz": "UTC"})
    second = j.claim("2026-05-05T08:00:00Z")
    resent = j._decide("2026-05-05T08:00:00Z", {"type": "daily_login_claim", "id": j1,
                                                 "client_tz": "UTC"})
    expected = str(uuid.uuid5(NS_GRANT, f"{j.id}/daily_login/2026-05-05"))
    assert first.fields["outcome"] == "awarded" and first.fields["receipt_id"] == expected
    assert (second["outcome"], second["receipt_id"]) == ("already_claimed", expected)
    assert resent.outcome == first.outcome and resent.award == first.award
    assert j.state.version == 2  # the resend changed nothing


def test_12_the_version_is_chosen_by_reward_day() -> None:
    v2 = PolicyVersion("daily_login", 2, datetime(2026, 9, 1).date(), {**P, "base_xp": 20})
    pol = policies(None, v2)
    k = Student("Pacific/Kiritimati", pol).claim("2026-08-31T10:30:00Z")
    ny = Student("America/New_York", pol).claim("2026-08-31T10:30:00Z")
    assert (k["reward_day_id"], k["policy_version"], k["xp"]) == ("2026-09-01", 2, 20)
    assert (ny["reward_day_id"], ny["policy_version"], ny["xp"]) == ("2026-08-31", 1, 10)


def test_13_a_version_published_too_late() -> None:
    deadline = publish_deadline(datetime(2026, 9, 2).date(), 3600)
    assert deadline == datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
    assert datetime(2026, 9, 1, 9, 30, tzinfo=UTC) > deadline


def test_a_season_is_added_or_changed_only_the_publish_lead_before_it_starts() -> None:
    """docs/design.md, "Grants: seasons": a started season is immutable, and a season is
    added, moved or dropped at least the lead before it starts (or an event could fall in a
    season some decider does not know yet)."""
    def calendar(version: int, *seasons: tuple[str, str, str]) -> dict[str, Any]:
        return {"kind": "season_calendar", "policy_id": "seasons", "version": version,
                "seasons": [{"season_id": i, "starts_at": a, "ends_at": b}
                            for i, a, b in seasons]}
    s1 = ("S1", "2026-01-01T00:00:00Z", "2026-07-01T00:00:00Z")
    s2 = ("S2", "2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z")
    pol = Policies()
    now = datetime(2026, 6, 30, 22, 0, tzinfo=UTC)  # S2 starts in 2 h, S1 has started
    assert refusal(calendar(1, s1), now, 3600, pol) is not None  # S1 has started
    assert refusal(calendar(1, s1), datetime(2025, 12, 1, tzinfo=UTC), 3600, pol) is None
    apply(calendar(1, s1), pol)
    assert refusal(calendar(2, s1, s2), now, 3600, pol) is None  # 2 h ahead, lead 1 h
    late = refusal(calendar(2, s1, s2), now, 3 * 3600, pol)  # lead 3 h: too late
    assert late is not None and late.startswith("season_too_late: seasons ['S2']")
    moved = refusal(calendar(2, ("S1", "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z")),
                    now, 3600, pol)
    assert moved is not None and "['S1']" in moved
    past = refusal(calendar(2, s1, ("S0", "2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z")),
                   now, 3600, pol)  # a season added in the past would re-season old events
    assert past is not None and "['S0']" in past
    apply(calendar(2, s1, s2), pol)
    assert refusal(calendar(2, s1, s2), now, 3600, pol) is None  # read again: the same
    older = refusal(calendar(1, s1), now, 3600, pol)
    assert older is not None and older.startswith("calendar_version: season calendar v1")
    cal = Calendar.from_record(calendar(2, s1, s2))
    assert cal.season_of(datetime(2026, 7, 1, tzinfo=UTC)) == "S2"  # half-open intervals
    assert cal.season_of(datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)) == "S1"
    assert cal.season_of(datetime(2027, 1, 1, tzinfo=UTC)) is None


def test_15_the_first_claim_sets_the_zone_and_a_mismatch_is_a_hint() -> None:
    o = Student()
    first = o.claim("2026-01-31T23:10:00Z", client_tz="Europe/Stockholm")
    second = o.claim("2026-02-02T05:00:00Z", client_tz="America/New_York",
                     client_time="2026-02-02T00:00:00-05:00")
    assert (first["reward_day_id"], first["reward_tz"]) == ("2026-02-01", "Europe/Stockholm")
    assert (second["reward_day_id"], second["hints"]) == ("2026-02-02", ["tz_mismatch"])
    assert o.state.reward_tz == "Europe/Stockholm" and o.state.current_streak == 2


def test_16_the_server_clock_decides_and_skew_is_a_hint() -> None:
    p = Student("Europe/Stockholm")
    for d in (29, 30, 31):
        p.claim(f"2026-03-{d}T08:00:00Z")
    got = p.claim("2026-04-02T08:00:00Z", client_time="2026-04-01T23:50:00+02:00")
    assert (got["reward_day_id"], got["streak_day"], got["xp"]) == ("2026-04-02", 4, 12)
    assert got["hints"] == ["clock_skew"]
    assert (p.state.grace_tokens, p.state.grace_used) == (0, 1)


def test_17_segment_overrides() -> None:
    pol = policies({**P, "segment_overrides": {"new_learner": {"base_xp": 20},
                                               "grade_1_3": {"caps": {"max_award_xp": 60}}}})
    xp = {}
    for segment in ("new_learner", "grade_1_3"):
        s = Student("UTC", pol)
        got = [s.claim(f"2026-06-0{d}T08:00:00Z", segment=segment) for d in range(1, 8)]
        xp[segment] = got[-1]["xp"]
        assert all(o["hints"] == [] for o in got)
    assert xp == {"new_learner": 80, "grade_1_3": 60}
    unknown = Student("UTC", pol)  # no override of its own: the base, and a hint to count
    got = [unknown.claim(f"2026-06-0{d}T08:00:00Z", segment="grade_4_6") for d in range(1, 3)]
    assert [(o["xp"], o["hints"]) for o in got] == [(10, ["unknown_segment"])] * 2


def test_18_a_weekend_window() -> None:
    pol = policies({**P, "windows": [{"id": "weekend", "days_of_week": [6, 7], "pct": 200}]})
    s = Student("Europe/Stockholm", pol)
    got = [s.claim(t) for t in ("2026-06-06T08:00:00Z", "2026-06-07T08:00:00Z",
                                "2026-06-08T08:00:00Z")]
    assert [(o["xp"], o["streak_day"]) for o in got] == [(20, 1), (20, 2), (12, 3)]


def test_20_bad_input() -> None:
    u = Student("Europe/Stockholm")
    with pytest.raises(UnknownTimeZone):
        u.claim("2026-06-01T08:00:00Z", client_tz="Mars/Olympus")
    u.claim("2026-06-01T08:00:00Z")
    noop = u.change("2026-06-01T09:00:00Z", "Europe/Stockholm")
    assert (noop["outcome"], noop["reason"]) == ("rejected", "tz_change_noop")
    assert u.state.changes == ()


def test_a_cancelled_change_and_no_policy() -> None:
    u = Student("Europe/Stockholm")
    u.claim("2026-06-01T08:00:00Z")
    u.change("2026-06-01T09:00:00Z", "Europe/London")
    back = u.change("2026-06-01T10:00:00Z", "Europe/Stockholm")
    assert (back["outcome"], back["reason"]) == ("accepted", "tz_change_cancelled")
    assert u.state.pending_tz is None
    early = Student("UTC").claim("2025-12-31T12:00:00Z")
    assert (early["outcome"], early["reason"]) == ("rejected", "no_policy")


def test_the_receipt_depends_on_student_policy_and_day_only() -> None:
    sid = str(uuid.uuid4())
    day = datetime(2026, 5, 5).date()
    assert receipt(sid, "daily_login", day) == receipt(sid, "daily_login", day)
    assert receipt(sid, "daily_login", day) != receipt(sid, "daily_login",
                                                       datetime(2026, 5, 6).date())


def test_the_claim_workload_model_and_the_rule_agree() -> None:
    """loadgen's expectation (computed without the rule's code) = ``decide`` over the same
    claims: 60 learners, 40 days across the autumn DST changes of both hemispheres; and its
    seasonal XP = the fold of the awards under the workload's calendar (a rollover 14 days
    before the end)."""
    from datetime import date

    from streams.events import decode_xp
    from streams.grant.decide import decode_claim
    from streams.lab.loadgen import CLAIM_POLICY, claim_calendar, generate_claims
    from streams.xp.fold import Totals, fold

    records, expected = generate_claims(60, 40, seed=5, last_day=date(2026, 11, 20))
    pol = Policies()
    pol.add(PolicyVersion.from_record(CLAIM_POLICY))
    apply(claim_calendar(date(2026, 11, 20)), pol)
    states: dict[str, GrantState] = {}
    awards: dict[str, list[tuple[str, int]]] = {}
    totals: dict[str, Totals] = {}
    for offset, (key, value, ts) in enumerate(records):
        claim = decode_claim(key, value, 65536, ts, 0, offset)
        decision = decide(states.get(claim.student_id, GrantState()), claim, pol)
        states[claim.student_id] = decision.state
        if decision.award is not None:
            award = orjson.loads(decision.award)
            awards.setdefault(claim.student_id, []).append(
                (award["metadata"]["reward_day_id"], award["delta"]))
            event = decode_xp(key, decision.award, 65536)
            season = pol.calendar.season_at_us(to_us(event.created_at))
            assert (season[1] if season else None) == award["metadata"]["season_id"]
            totals[claim.student_id] = fold(totals.get(claim.student_id), event, 0, offset,
                                            1.0, season=season)
    assert awards == expected.awards
    assert {sid: (t.season_id, t.seasonal_xp) for sid, t in totals.items()} == expected.seasonal
    assert all(t.seasonal_xp < t.total_xp for t in totals.values())  # all rolled over
    assert {sid: (s.current_streak, s.longest_streak, s.grace_tokens)
            for sid, s in states.items() if s.last_day} == expected.streaks


@pytest.mark.parametrize("when", [datetime(9999, 12, 31, 23, 0, tzinfo=UTC),
                                  datetime(9999, 1, 1, tzinfo=UTC),
                                  datetime(2100, 1, 1, tzinfo=UTC)])
def test_a_claim_timed_near_year_9999_is_refused_as_invalid_not_a_crash(when: datetime) -> None:
    """A broker that accepts any record time (Kafka 3.x) passes a claim stamped 9999: decoding
    refuses it (the worker dead-letters it) instead of ``decide`` raising ``OverflowError`` and
    halting the partition."""
    from streams.grant.decide import decode_claim

    student = str(uuid.uuid4())
    value = orjson.dumps({"type": "daily_login_claim", "id": str(uuid.uuid4()),
                          "student_id": student, "client_tz": "Pacific/Kiritimati"})
    with pytest.raises(InvalidEvent) as refused:
        claim = decode_claim(student.encode(), value, 65536, int(when.timestamp() * 1000), 0, 0)
        decide(GrantState(), claim, policies())
    assert refused.value.reason == "timestamp_out_of_range"
    with pytest.raises(InvalidEvent):  # a record without a timestamp (-1)
        decode_claim(student.encode(), value, 65536, -1, 0, 0)


def test_policy_validate_previews_every_window(tmp_path: Any) -> None:
    """``streams policy validate --offline`` shows the XP of each window that can apply and of
    days without one; a window that rounds an award to 0 XP is refused in one line."""
    from datetime import timedelta

    from click.testing import CliRunner

    from streams.cli import main

    monday = datetime.now(UTC).date() + timedelta(days=30)
    monday -= timedelta(days=monday.weekday())
    record = {"kind": "policy", "policy_id": "daily_login", "version": 2,
              "effective_day": monday.isoformat(),
              "definition": {**P, "windows": [{"id": "weekend", "days_of_week": [6, 7],
                                               "pct": 200}]}}
    path = tmp_path / "policy.json"
    path.write_bytes(orjson.dumps(record))
    shown = CliRunner().invoke(main, ["policy", "validate", "--offline", str(path)],
                               terminal_width=400)
    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.output.splitlines() if line.startswith("┃"))
    assert "no window" in header and "window weekend" in header
    first = next(line for line in shown.output.splitlines() if line.strip(" │┃").startswith("1 "))
    assert [c.strip() for c in first.split("│")[1:-1]] == ["1", "10", "20"]  # Monday first
    record["definition"]["windows"][0]["pct"] = 5  # type: ignore[index]
    path.write_bytes(orjson.dumps(record))
    refused = CliRunner().invoke(main, ["policy", "validate", "--offline", str(path)])
    assert refused.exit_code == 1
    assert "window weekend" in refused.output and "0 XP" in refused.output


@pytest.mark.parametrize(("effective", "window"), [
    ("9999-12-31", None), ("0001-01-01", None),
    ("2026-01-01", {"id": "w", "pct": 200, "from_day": "9999-12-30", "to_day": "9999-12-31"})])
def test_a_policy_dated_at_the_ends_of_the_calendar_is_refused_not_a_crash(
        effective: str, window: dict[str, Any] | None) -> None:
    """A policy effective 9999-12-31 made the check's date arithmetic raise OverflowError in
    the policy feed: the worker exited on the same policies record after every restart, and
    every claim halted (found by the hostile-input campaign)."""
    definition = {**P, **({"windows": [window]} if window else {})}
    record = {"kind": "policy", "policy_id": "daily_login", "version": 2,
              "effective_day": effective, "definition": definition}
    why = refusal(record, datetime(2026, 6, 1, tzinfo=UTC), 3600, Policies())
    assert why is not None and "[1970-01-01, 2099-12-31]" in why


@pytest.mark.parametrize("client_time", ["2016-12-31T23:59:60Z", "2026-13-01T00:00:00Z",
                                         "0000-01-01T00:00:00Z", "2026-06-01T12:00:00+24:00"])
def test_a_claim_whose_client_time_is_no_instant_is_dead_lettered(client_time: str) -> None:
    """The schema's pattern lets a leap second or month 13 through; the clock-skew hint's
    parse raised ValueError in decide: the worker exited on the same claim after every
    restart (found by the hostile-input campaign). Now ``bad_timestamp``, decided never."""
    from streams.grant.decide import decode_claim

    student = str(uuid.uuid4())
    value = orjson.dumps({"type": "daily_login_claim", "id": str(uuid.uuid4()),
                          "student_id": student, "client_tz": "UTC",
                          "client_time": client_time})
    with pytest.raises(InvalidEvent) as info:
        decode_claim(student.encode(), value, 65536, 1_780_000_000_000, 0, 0)
    assert info.value.reason == "bad_timestamp"


def test_an_award_decided_long_after_its_claim_is_a_valid_xp_event() -> None:
    """An award carries its claim's record time as created_at and is emitted (record time:
    now) when the claim is decided. A claim stamped 400 days ago made an award the XP stream
    dead-lettered as timestamp_out_of_range: xp_awards held the award, the learner's total
    and the ledger did not (found by the hostile-input campaign)."""
    pol = Policies()
    pol.add(PolicyVersion("daily_login", 1, datetime(2000, 1, 1).date(), P))
    u = Student("Europe/Stockholm", pol)
    when = datetime.now(UTC) - timedelta(days=400)
    claim = Claim.from_json({"type": "daily_login_claim", "id": str(uuid.uuid4()),
                             "student_id": u.id, "client_tz": "UTC"}, to_us(when) // 1000)
    decision = decide(u.state, claim, u.policies)
    assert decision.award is not None
    (event,) = decode_record(u.id.encode(), decision.award, Limits(), (0, 1),
                             datetime.now(UTC).timestamp())
    assert event.delta == 10
    forged = {**orjson.loads(decision.award), "metadata": {"source": "a game server"}}
    with pytest.raises(InvalidEvent) as info:  # only the grant stream's awards are exempt
        decode_record(u.id.encode(), orjson.dumps(forged), Limits(), (0, 1),
                      datetime.now(UTC).timestamp())
    assert info.value.reason == "timestamp_out_of_range"
