"""The fold and the dedupe rule, including properties over permutations (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dedupe import (
    Sighting,
    Verdict,
    classify,
    decode_sighting,
    expired,
    from_ledger,
)
from streams.errors import InvalidEvent
from streams.events import XpEvent, decode_xp
from streams.xp.fold import already_applied, decode_totals, encode_totals, fold

STUDENT = "0b7e4c1a-5d2f-4e3b-8a9c-1d2e3f4a5b6c"
BASE = datetime(2026, 11, 20, tzinfo=UTC)


def make(n: int, kind: str = "typing", delta: int = 10, minutes: int = 0,
         metadata: dict[str, object] | None = None) -> XpEvent:
    doc = {"id": f"00000000-0000-4000-8000-{n:012d}", "student_id": STUDENT, "kind": kind,
           "delta": delta, "created_at": (BASE + timedelta(minutes=minutes)).isoformat(),
           "metadata": metadata}
    return decode_xp(STUDENT.encode(), orjson.dumps(doc), 65536)


def run(records: list[tuple[XpEvent, int]]) -> tuple[int, int, str | None, int]:
    """Apply records (event, offset) the way the worker does; return the resulting totals."""
    seen: dict[str, Sighting] = {}
    totals = None
    for ev, offset in records:
        verdict = classify(seen.get(ev.id), ev.fingerprint, 0, offset)
        if verdict in (Verdict.DUPLICATE, Verdict.CONFLICT):
            continue
        if not already_applied(totals, 0, offset):
            totals = fold(totals, ev, 0, offset, now=1.0)
        seen.setdefault(ev.id, Sighting(ev.fingerprint, 0, offset, 1.0, 0.0))
    assert totals is not None
    return totals.total_xp, totals.games_played, totals.last_game_type, totals.version


def test_fold_counts_games_and_follows_latest_created_at() -> None:
    t = fold(None, make(1, "quiz", 30, minutes=5), 0, 0, 1.0)
    t = fold(t, make(2, "typing", 10, minutes=1), 0, 1, 2.0)  # late: older created_at
    t = fold(t, make(3, "daily_login", 5, minutes=9), 0, 2, 3.0)  # not a game
    t = fold(t, make(4, "adjustment", -7, minutes=10), 0, 3, 4.0)
    assert (t.total_xp, t.games_played, t.last_game_type, t.version) == (38, 2, "quiz", 4)
    assert decode_totals(encode_totals(t)) == t


def test_redelivered_record_is_not_applied_twice() -> None:
    ev = make(1)
    assert run([(ev, 0), (ev, 0)]) == (10, 1, "typing", 1)  # same offset: a re-delivery
    assert run([(ev, 0), (ev, 5)]) == (10, 1, "typing", 1)  # other offset: a duplicate


def test_conflict_first_one_wins() -> None:
    first, other = make(1, delta=10), make(1, delta=99)
    assert classify(Sighting(first.fingerprint, 0, 0, 1.0, 0.0), other.fingerprint, 0, 3) \
        is Verdict.CONFLICT
    assert run([(first, 0), (other, 3)]) == (10, 1, "typing", 1)


def test_ledger_check_past_the_horizon() -> None:
    ev = make(1)
    assert from_ledger(None, ev.fingerprint, 0, 9) is Verdict.NEW
    assert from_ledger((0, 9, 0, ev.fingerprint), ev.fingerprint, 0, 9) is Verdict.NEW
    assert from_ledger((0, 9, 0, ev.fingerprint), ev.fingerprint, 0, 9, 1) is Verdict.DUPLICATE
    assert from_ledger((0, 2, 0, ev.fingerprint), ev.fingerprint, 0, 9) is Verdict.DUPLICATE
    assert from_ledger((0, 2, 0, b"other!!!"), ev.fingerprint, 0, 9) is Verdict.CONFLICT


def test_expiry_needs_both_sighting_and_event_to_be_old() -> None:
    s = Sighting(b"f" * 8, 0, 0, seen_at=100.0, created_at=50.0)
    assert not expired(s, now=120.0, horizon=30.0)
    assert expired(s, now=140.0, horizon=30.0)
    assert not expired(s._replace(created_at=130.0), now=140.0, horizon=30.0)


events_strategy = st.lists(
    st.tuples(st.sampled_from(["typing", "quiz", "daily_login", "adjustment"]),
              st.integers(0, 50), st.integers(0, 10_000)),
    min_size=1, max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(events=events_strategy, data=st.data())
def test_any_order_with_duplicates_gives_the_same_totals(events, data) -> None:  # type: ignore[no-untyped-def]
    """Guarantees 2 and 7: the fold of any permutation of a student's events, with duplicates
    and re-deliveries mixed in, gives the same total, game count and last game type."""
    distinct = [make(i, kind, delta, minutes) for i, (kind, delta, minutes) in enumerate(events)]
    distinct = [e for i, e in enumerate(distinct)  # unique created_at: last_game_type is defined
                if all(e.created_at != o.created_at for o in distinct[:i])]
    order = data.draw(st.permutations(distinct))
    extra = data.draw(st.lists(st.sampled_from(distinct), max_size=10))
    stream = list(order) + extra
    stream = data.draw(st.permutations(stream))
    records = [(ev, offset) for offset, ev in enumerate(stream)]
    # a crash re-delivers a suffix of the records that were already applied
    cut = data.draw(st.integers(0, len(records)))
    records = records + records[cut:]
    total, games, last, version = run(records)
    games_only = [e for e in distinct if e.is_game]
    assert total == sum(e.delta for e in distinct)
    assert games == len(games_only)
    assert version == len(distinct)
    assert last == (max(games_only, key=lambda e: e.created_at).kind if games_only else None)


def test_a_backfill_carries_legacy_games_and_its_reversal_takes_them_back() -> None:
    backfill = make(1, "backfill", 500, minutes=-60,
                    metadata={"source": "legacy", "games_played": 40, "last_game_type": "quiz"})
    assert run([(backfill, 0)]) == (500, 40, "quiz", 1)
    game = make(2, "typing", 10, minutes=-90)  # played before the legacy last game
    assert run([(backfill, 0), (game, 1)]) == (510, 41, "quiz", 2)
    reversal = make(3, "adjustment", -500, metadata={"source": "legacy", "games_played": -40})
    assert run([(backfill, 0), (game, 1), (reversal, 2)]) == (10, 1, "quiz", 3)
    # a client's daily_login cannot move games_played through metadata
    login = make(4, "daily_login", 1, metadata={"games_played": 99})
    assert run([(login, 0)]) == (1, 0, None, 1)


def test_metadata_games_played_must_be_an_integer() -> None:
    doc = {"id": f"00000000-0000-4000-8000-{5:012d}", "student_id": STUDENT, "kind": "backfill",
           "delta": 1, "created_at": BASE.isoformat(), "metadata": {"games_played": "lots"}}
    with pytest.raises(InvalidEvent) as info:
        decode_xp(STUDENT.encode(), orjson.dumps(doc), 65536)
    assert info.value.reason == "schema"


def test_events_of_one_batched_record_apply_in_order_and_once() -> None:
    """Positions within a record: every event of a batched record applies, a
    re-delivery of the record applies none again, an id twice in one record counts once."""
    a, b, c = make(1, "quiz", 30), make(2, "typing", 10), make(3, "memory", 5)
    seen: dict[str, Sighting] = {}
    totals = None
    for _delivery in range(2):  # the record, then its re-delivery after a crash
        for index, ev in enumerate([a, b, a, c]):  # a appears twice in the record
            verdict = classify(seen.get(ev.id), ev.fingerprint, 0, 7, index)
            if verdict in (Verdict.DUPLICATE, Verdict.CONFLICT):
                continue
            if not already_applied(totals, 0, 7, index):
                totals = fold(totals, ev, 0, 7, 1.0, index)
            seen.setdefault(ev.id, Sighting(ev.fingerprint, 0, 7, 1.0, 0.0, index))
    assert totals is not None
    assert (totals.total_xp, totals.version, totals.record_index) == (45, 3, 3)
    assert already_applied(totals, 0, 7, 3) and not already_applied(totals, 0, 8, 0)


def test_entries_written_before_record_index_existed_still_decode() -> None:
    old_totals = b'[5,1,"quiz",1,2.0,1,0,9]'
    assert decode_totals(old_totals).record_index == 0
    assert decode_sighting(b'["6666666666666666",0,9,1.0,2.0]').record_index == 0
    t = fold(None, make(1), 0, 3, 1.0, 2)
    assert decode_totals(encode_totals(t)) == t


def test_a_total_beyond_the_bigint_column_is_refused() -> None:
    """Integer overflow of totals; the record goes to the DLQ (total_overflow)."""
    near = fold(None, make(1, delta=10), 0, 0, 1.0)._replace(total_xp=2**63 - 5)
    assert fold(near, make(2, delta=4), 0, 1, 2.0).total_xp == 2**63 - 1
    with pytest.raises(InvalidEvent) as info:
        fold(near, make(3, delta=5), 0, 2, 3.0)
    assert info.value.reason == "total_overflow"


def test_seasonal_xp_adds_in_its_season_rolls_over_to_a_newer_one_and_ignores_an_older_one(
        ) -> None:
    s1, s2 = (1_000, "S1"), (2_000, "S2")
    t = fold(None, make(1, delta=5), 0, 0, 1.0, season=s1)
    t = fold(t, make(2, delta=7), 0, 1, 1.0, season=s1)
    assert (t.seasonal_xp, t.season_id) == (12, "S1")
    t = fold(t, make(3, delta=3), 0, 2, 1.0, season=s2)  # rollover
    assert (t.seasonal_xp, t.season_id, t.total_xp) == (3, "S2", 15)
    t = fold(t, make(4, delta=100), 0, 3, 1.0, season=s1)  # late, older season: lifetime only
    t = fold(t, make(5, delta=50), 0, 4, 1.0)  # in no season (a gap): lifetime only
    assert (t.seasonal_xp, t.season_id, t.total_xp) == (3, "S2", 165)
    assert decode_totals(encode_totals(t)) == t


season_events = st.lists(st.tuples(st.integers(-50, 500), st.sampled_from([None, 0, 1, 2])),
                         min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(events=season_events, data=st.data())
def test_seasonal_xp_is_the_ledger_sum_of_the_newest_season_in_any_order(events, data) -> None:  # type: ignore[no-untyped-def]
    """Property P12 (docs/design.md, "Grants: seasons"): whatever order a learner's events
    arrive in, ``seasonal_xp`` is the sum of the deltas of the newest season among them (the
    ledger's sum for that season), and ``total_xp`` never drops at a rollover."""
    seasons = [(1_000 * (i + 1), f"S{i}") for i in range(3)]
    order = data.draw(st.permutations(range(len(events))))
    t = None
    for offset, i in enumerate(order):
        delta, s = events[i]
        before = t.total_xp if t else 0
        ev = make(i, kind="adjustment" if delta < 0 else "typing", delta=delta)
        t = fold(t, ev, 0, offset, 1.0, season=None if s is None else seasons[s])
        assert t.total_xp == before + delta
    in_seasons = [s for _, s in events if s is not None]
    assert t is not None
    if not in_seasons:
        assert (t.season_id, t.seasonal_xp) == (None, 0)
    else:
        newest = max(in_seasons)
        assert t.season_id == seasons[newest][1]
        assert t.seasonal_xp == sum(d for d, s in events if s == newest)
