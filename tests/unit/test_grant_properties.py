"""Properties of the grant rule (docs/design.md, "Grants"), by hypothesis over zones with
unusual offsets and DST rules: monotonic reward days, one award per day, the award bound,
streaks and tokens, byte-stable replay with re-delivery and resent claims, policy versions."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.grant.decide import Claim, GrantState, decide, iso, receipt, to_us
from streams.policies import Policies, PolicyError, PolicyVersion

ZONES = ["America/New_York", "Europe/Stockholm", "Pacific/Kiritimati", "Pacific/Pago_Pago",
         "Etc/GMT+12", "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns",
         "Africa/Casablanca", "Pacific/Apia"]
P = {"base_xp": 10,
     "streak_curve": {"type": "table", "steps": [{"from_day": 1, "pct": 100},
                                                 {"from_day": 3, "pct": 120},
                                                 {"from_day": 7, "pct": 150}]},
     "milestones": [{"streak_day": 7, "bonus_xp": 50}, {"streak_day": 30, "bonus_xp": 200}],
     "caps": {"max_award_xp": 100}}
POLICIES = Policies()
POLICIES.add(PolicyVersion("daily_login", 1, date(2000, 1, 1), P))
START = to_us(datetime(2011, 12, 1, tzinfo=UTC))
END = to_us(datetime(2027, 1, 1, tzinfo=UTC))
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

op = st.one_of(
    st.tuples(st.just("claim"), st.integers(0, 3 * 86_400), st.sampled_from(ZONES)),
    st.tuples(st.just("change"), st.integers(0, 3 * 86_400), st.sampled_from(ZONES),
              st.sampled_from(["learner", "parent", "support"])),
)


def run(student: str, start_us: int, ops: list[tuple[Any, ...]]
        ) -> tuple[GrantState, list[tuple[Claim, Any]]]:
    """Decide ``ops`` (seconds after the previous record) in offset order."""
    state, t, out = GrantState(), start_us, []
    for offset, (kind, gap_s, zone, *rest) in enumerate(ops):
        t += gap_s * 1_000_000
        value: dict[str, Any] = {"id": str(uuid.uuid4()), "student_id": student}
        if kind == "claim":
            value |= {"type": "daily_login_claim", "client_tz": zone}
        else:
            value |= {"type": "reward_tz_change", "reward_tz": zone, "requested_by": rest[0]}
        claim = Claim.from_json(value, t // 1000, 0, offset)
        decision = decide(state, claim, POLICIES)
        state = decision.state
        out.append((claim, decision))
    return state, out


def claims_of(out: list[tuple[Claim, Any]]) -> list[dict[str, Any]]:
    return [d.fields for c, d in out if c.type == "daily_login_claim"]


@SETTINGS
@given(st.integers(START, END), st.lists(op, min_size=1, max_size=40))
def test_p1_p2_p8_days_never_go_back_one_award_per_day_longest_never_drops(
        start: int, ops: list[tuple[Any, ...]]) -> None:
    _, out = run(str(uuid.uuid4()), start, ops)
    days = [o["reward_day_id"] for o in claims_of(out)]
    assert days == sorted(days)  # P1
    awarded = [o["reward_day_id"] for o in claims_of(out) if o["outcome"] == "awarded"]
    assert awarded == sorted(set(awarded))  # P2: strictly increasing
    longest = [o["longest_streak"] for o in claims_of(out)]
    assert longest == sorted(longest)  # P8
    assert all(o["longest_streak"] >= o["current_streak"] for o in claims_of(out))


@SETTINGS
@given(st.integers(START, END), st.lists(op, min_size=2, max_size=60))
def test_p3_awards_are_bounded_by_the_time_span(start: int, ops: list[tuple[Any, ...]]) -> None:
    _, out = run(str(uuid.uuid4()), start, ops)
    times = [d.fields["decided_at"] for _, d in out]
    first = datetime.fromisoformat(times[0].replace("Z", "+00:00"))
    last = datetime.fromisoformat(times[-1].replace("Z", "+00:00"))
    awards = [o for o in claims_of(out) if o["outcome"] == "awarded"]
    span_days = (last - first) / timedelta(hours=24)
    assert len(awards) <= math.ceil(span_days) + 3
    for award in awards:
        assert (first - timedelta(hours=12)).date().isoformat() <= award["reward_day_id"]
        assert award["reward_day_id"] <= (last + timedelta(hours=14)).date().isoformat()


@SETTINGS
@given(st.sampled_from(ZONES), st.dates(date(2012, 1, 1), date(2026, 6, 1)),
       st.lists(st.integers(0, 86_399), min_size=1, max_size=60))
def test_p4_one_claim_per_local_date_counts_consecutive_dates(
        zone: str, first: date, seconds_of_day: list[int]) -> None:
    from streams.grant.decide import date_exists, day_start

    student, state = str(uuid.uuid4()), GrantState()
    day, streak = first, 0
    for offset, second in enumerate(seconds_of_day):
        while not date_exists(day, zone):
            day += timedelta(days=1)
        start, end = day_start(day, zone), day_start(day + timedelta(days=1), zone)
        t = min(start + second * 1_000_000, end - 1)
        claim = Claim.from_json({"type": "daily_login_claim", "id": str(uuid.uuid4()),
                                 "student_id": student, "client_tz": zone}, t // 1000, 0, offset)
        decision = decide(state, claim, POLICIES)
        state = decision.state
        if t // 1000 * 1000 < start:  # the millisecond timestamp fell before the day
            continue
        streak += 1
        assert decision.fields["outcome"] == "awarded", decision.fields
        assert decision.fields["streak_day"] == streak
        day += timedelta(days=1)


@SETTINGS
@given(st.integers(START, END), st.lists(op, min_size=2, max_size=30), st.data())
def test_p5_replay_is_byte_identical_with_redelivery_and_resends(
        start: int, ops: list[tuple[Any, ...]], data: st.DataObject) -> None:
    student = str(uuid.uuid4())
    final, out = run(student, start, ops)
    claims = [c for c, _ in out]
    outputs = [(d.outcome, d.award) for _, d in out]
    again, state = [], GrantState()
    for claim in claims:
        decision = decide(state, claim, POLICIES)
        state = decision.state
        again.append((decision.outcome, decision.award))
    assert again == outputs and state == final
    # a crash: the state as of record j, the records after i <= j delivered again
    j = data.draw(st.integers(0, len(claims) - 1))
    i = data.draw(st.integers(max(0, j - 7), j))
    state = GrantState()
    for claim in claims[:j + 1]:
        state = decide(state, claim, POLICIES).state
    for n, claim in enumerate(claims[i:], start=i):
        decision = decide(state, claim, POLICIES)
        state = decision.state
        assert (decision.outcome, decision.award) == outputs[n]
    assert state.to_json() == final.to_json()
    assert GrantState.from_json(final.to_json()) == final
    # a client resends a recent claim id: the same outcome again, nothing changes
    k = data.draw(st.integers(max(0, len(claims) - 8), len(claims) - 1))
    resend = Claim(**{**claims[k].__dict__, "offset": len(claims),
                      "timestamp_us": claims[-1].timestamp_us + 1000})
    decision = decide(final, resend, POLICIES)
    assert (decision.outcome, decision.award) == outputs[k]
    assert decision.state.version == final.version


@SETTINGS
@given(st.sampled_from(ZONES), st.integers(START, END),
       st.lists(st.tuples(st.integers(0, 3600), st.integers(0, 2)), min_size=1, max_size=12))
def test_p6_same_day_claims_in_any_order_and_number_give_one_award(
        zone: str, start: int, tries: list[tuple[int, int]]) -> None:
    from streams.grant.decide import day_start, local_date

    student = str(uuid.uuid4())
    day = local_date(start, zone)
    begin = day_start(day, zone)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    state, awards, decided = GrantState(), [], 0
    for offset, (second, which) in enumerate(tries):
        t = max(begin, start) + second * 1_000_000
        if local_date(t, zone) != day:
            continue
        decided += 1
        claim = Claim.from_json({"type": "daily_login_claim", "id": ids[which],
                                 "student_id": student, "client_tz": zone}, t // 1000, 0, offset)
        decision = decide(state, claim, POLICIES)
        state = decision.state
        if decision.fields.get("outcome") == "awarded":
            awards.append(decision.award)  # a resent claim id gets the same bytes again
    assert len(set(awards)) == min(decided, 1)
    if not awards:
        return
    award = awards[0]
    assert award is not None and receipt(student, "daily_login", day).encode() in award


@SETTINGS
@given(st.integers(START, END), st.lists(op, min_size=1, max_size=60))
def test_p7_tokens_stay_in_bounds_and_cover_only_held_days(
        start: int, ops: list[tuple[Any, ...]]) -> None:
    _, out = run(str(uuid.uuid4()), start, ops)
    previous = None
    for o in claims_of(out):
        assert 0 <= o["grace_tokens"] <= 2
        if o["outcome"] == "awarded" and previous is not None:
            if o["grace_consumed"]:
                assert o["grace_consumed"] <= previous["grace_tokens"]
                assert o["streak_day"] == previous["current_streak"] + 1
            if o["streak_day"] == 1:  # a lost streak burns nothing (a token may be earned)
                assert o["grace_tokens"] >= previous["grace_tokens"]
        previous = o


@SETTINGS
@given(st.integers(START, END), st.lists(op, min_size=1, max_size=60))
def test_p11_changes_per_30_days_stay_within_the_limit(
        start: int, ops: list[tuple[Any, ...]]) -> None:
    _, out = run(str(uuid.uuid4()), start, ops)
    effective = sorted(d.fields["effective_at"] for c, d in out
                       if c.type == "reward_tz_change" and c.requested_by != "support"
                       and d.fields["outcome"] == "accepted" and d.fields["reason"] is None
                       and d.fields["effective_at"] is not None)
    # a request that replaces a pending change has its instant: count instants once
    instants = sorted({datetime.fromisoformat(e.replace("Z", "+00:00")) for e in effective})
    for e in instants:
        assert len([x for x in instants if e - timedelta(days=30) < x <= e]) <= 2


@SETTINGS
@given(st.lists(st.dates(date(2020, 1, 1), date(2030, 1, 1)), min_size=1, max_size=8,
                unique=True), st.dates(date(2019, 1, 1), date(2031, 1, 1)))
def test_p10_exactly_one_version_per_day_monotone_in_the_day(
        days: list[date], probe: date) -> None:
    pol = Policies()
    for n, day in enumerate(sorted(days), start=1):
        pol.add(PolicyVersion("daily_login", n, day, P))
    chosen = pol.version_for("daily_login", probe)
    applicable = [d for d in days if d <= probe]
    assert (chosen is None) == (not applicable)
    if chosen is not None:
        assert chosen.effective_day == max(applicable)
        later = pol.version_for("daily_login", probe + timedelta(days=1))
        assert later is not None and later.version >= chosen.version


definitions = st.fixed_dictionaries(
    {"base_xp": st.integers(1, 1000),
     "streak_curve": st.one_of(
         st.lists(st.integers(1, 1000), min_size=1, max_size=5).map(
             lambda pcts: {"type": "table", "steps": [{"from_day": 1 + 3 * n, "pct": p}
                                                      for n, p in enumerate(pcts)]}),
         st.tuples(st.integers(1, 1000), st.integers(0, 50), st.integers(1, 1000)).map(
             lambda t: {"type": "linear", "start_pct": t[0], "step_pct": t[1], "max_pct": t[2]})),
     "caps": st.fixed_dictionaries({"max_award_xp": st.integers(1, 100_000)})},
    optional={"milestones": st.lists(st.fixed_dictionaries(
        {"streak_day": st.integers(1, 400), "bonus_xp": st.integers(1, 1000)}), max_size=3),
        "segment_overrides": st.dictionaries(st.sampled_from(["a", "b"]), st.fixed_dictionaries(
            {}, optional={"base_xp": st.integers(1, 1000)}), max_size=2)})


@SETTINGS
@given(definitions)
def test_p9_every_merged_combination_validates_and_awards_within_the_cap(
        definition: dict[str, Any]) -> None:
    from streams.events import schema_validator

    record = {"kind": "policy", "policy_id": "daily_login", "version": 1,
              "effective_day": "2026-09-01", "definition": definition}
    schema_validator("xp_policy.v1.json")(record)
    try:
        version = PolicyVersion.from_record(record)
    except PolicyError as exc:  # refused at publish: some streak day would award nothing
        assert "would award 0 XP" in str(exc)
        return
    for season, segment in version.combinations():
        d = version.effective(season, segment)
        for day in range(1, 401):
            assert 1 <= d.amount(day, date(2026, 9, 1)) <= d.raw["caps"]["max_award_xp"]


@given(st.uuids(), st.dates(), st.uuids(), st.dates())
def test_p13_the_receipt_depends_only_on_student_policy_and_day(
        a: uuid.UUID, d: date, b: uuid.UUID, e: date) -> None:
    assert (receipt(str(a), "daily_login", d) == receipt(str(b), "daily_login", e)) == (
        (a, d) == (b, e))
    assert iso(0) == "1970-01-01T00:00:00.000000Z"
