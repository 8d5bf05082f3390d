"""The changelog audit's comparisons (streams/audit/changelogs.py): sightings against ledger
rows, progress against the fold of action events, positions against committed offsets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from streams import topics
from streams.audit.changelogs import (
    LedgerSighting,
    compare_positions,
    compare_sightings,
    fold_actions,
)
from streams.dedupe import Sighting, encode_sighting

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
FP = b"\x01" * 16


STUDENT = uuid.UUID(int=99, version=4)


def row(n: int, partition: int = 0, offset: int = 0, created: datetime = AT,
        owner: uuid.UUID = STUDENT) -> LedgerSighting:
    return LedgerSighting(uuid.UUID(int=n, version=4), owner, partition, offset, 0, FP,
                          created.timestamp())


def sighting(r: LedgerSighting) -> Sighting:
    return Sighting(r.fingerprint, r.partition, r.offset, 0.0, r.created_at,
                    r.record_index)


def seen(r: LedgerSighting, **changes: int) -> bytes:
    return encode_sighting(sighting(r)._replace(**changes))


def test_matching_sightings_and_expired_ones_are_not_differences() -> None:
    rows = [row(1, 0, 5), row(2, 1, 7), row(3, 1, 8, AT - timedelta(days=30))]
    recovered = {(r.partition, r.key): seen(r) for r in rows[:2]}  # row 3: expired
    assert compare_sightings(topics.DEDUPE_TABLE, recovered, rows,
                             lambda created: created < (AT - timedelta(days=7)).timestamp()) == []


def test_a_missing_a_moved_and_an_extra_sighting_are_each_a_difference() -> None:
    rows = [row(1, 0, 5), row(2, 1, 7), row(3, 1, 8, AT - timedelta(days=30))]
    recovered = {(1, rows[1].key): seen(rows[1], offset=9),   # moved
                 (1, rows[2].key): seen(rows[2]),
                 (2, row(4).key): seen(row(4, 2, 1))}  # no ledger row
    found = compare_sightings(topics.DEDUPE_TABLE, recovered, rows, lambda _c: False)
    assert [(d.key, d.recovered is None, d.ledger is None) for d in found] == [
        (f"{rows[0].id}/{STUDENT}@0", True, False),
        (f"{rows[1].id}/{STUDENT}@1", False, False),
        (f"{uuid.UUID(int=4, version=4)}/{STUDENT}@2", False, True)]
    assert found[1].recovered is not None and found[1].recovered["offset"] == 9


def test_one_event_id_of_two_students_is_two_sightings_each_with_its_ledger_row() -> None:
    """An event is (id, owner): one id sent for two students is two ledger rows and two
    sightings; a sighting of the id for a student without that row is a difference."""
    other = uuid.UUID(int=98, version=4)
    first, second = row(1, 0, 5), row(1, 3, 2, owner=other)
    recovered = {(0, first.key): seen(first), (3, second.key): seen(second)}
    assert compare_sightings(topics.DEDUPE_TABLE, dict(recovered), [first, second],
                             lambda _c: False) == []
    found = compare_sightings(topics.DEDUPE_TABLE, recovered, [first], lambda _c: False)
    assert [d.key for d in found] == [f"{first.id}/{other}@3"]


def test_a_sighting_under_the_id_alone_matches_the_row_it_equals() -> None:
    """Stores written before events were keyed by owner hold the id alone as the key."""
    r, moved = row(1, 0, 5), row(2, 0, 6)
    recovered = {(0, r.id.bytes): seen(r), (0, moved.id.bytes): seen(moved, offset=1)}
    found = compare_sightings(topics.DEDUPE_TABLE, recovered, [r, moved], lambda _c: False)
    assert [(d.key, d.recovered is None) for d in found] == [
        (f"{moved.id}/{STUDENT}@0", True), (f"{moved.id}@0", False)]


def test_progress_is_folded_per_key_in_partition_order() -> None:
    profile = str(uuid.uuid4())

    def action(n: int, offset: int, completed: bool, action_id: str = "apply",
               vector: str = "genius") -> tuple[object, ...]:
        return (uuid.UUID(int=n, version=4), action_id, profile, "dashboard", vector, None,
                AT + timedelta(minutes=n), AT if completed else None, None, None,
                {"sequence_version": "v2"}, FP, 0, offset)
    folded = fold_actions(iter([action(1, 0, True), action(2, 1, False),
                                action(3, 2, True, "draft_skip"), action(4, 3, True),
                                action(5, 4, True, vector="mind")]))
    genius = folded[f"{profile}|genius|v2".encode()]
    assert (genius.step_index, genius.applied, genius.offset) == (2, 4, 3)
    assert genius.draft_skipped_at == (AT + timedelta(minutes=3)).timestamp()
    assert folded[f"{profile}|mind|v2".encode()].step_index == 1


def test_positions_compare_with_committed_offsets() -> None:
    assert compare_positions({"xp-events/0": 10}, {"xp-events/0": 10, "xp-events/1": None}) == []
    found = compare_positions({"xp-events/0": 9}, {"xp-events/0": 10, "xp-events/1": 4})
    assert [(d.key, d.recovered, d.ledger) for d in found] == [
        ("xp-events/0", {"offset": 9}, {"offset": 10}), ("xp-events/1", None, {"offset": 4})]
