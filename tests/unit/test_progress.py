"""The vector progress fold (streams/actions/fold.py): its rules, idempotence and order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.actions.fold import (
    DRAFT_SKIP,
    Progress,
    already_applied,
    decode_progress,
    encode_progress,
    fold,
    progress_key,
)
from streams.events import ActionEvent, decode_action

PROFILE = "5d3a9c1e-2b4f-4e6a-8c0d-1f2e3a4b5c6d"
BASE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def action(n: int, *, completed: bool = True, action_id: str = "apply_genius",
           vector: str = "genius", minutes: int = 0, version: str | None = None) -> ActionEvent:
    at = BASE + timedelta(minutes=minutes)
    doc = {"id": str(uuid.UUID(int=n, version=4)), "action_id": action_id,
           "profile_id": PROFILE, "source": "dashboard", "vector": vector,
           "selected_at": at.isoformat(),
           "completed_at": (at + timedelta(minutes=5)).isoformat() if completed else None,
           "duration": 300.4}
    if version is not None:
        doc["metadata"] = {"sequence_version": version}
    return decode_action(PROFILE.encode(), orjson.dumps(doc), 65536)


def run(events: list[ActionEvent]) -> dict[bytes, Progress]:
    state: dict[bytes, Progress] = {}
    for offset, ev in enumerate(events):
        key = progress_key(ev)
        state[key] = fold(state.get(key), ev, 0, offset, 1_000.0 + offset)
    return state


def test_completions_advance_the_step_and_a_draft_skip_sets_the_earliest_skip() -> None:
    state = run([action(1), action(2, completed=False), action(3),
                 action(4, action_id=DRAFT_SKIP, minutes=30),
                 action(5, action_id=DRAFT_SKIP, minutes=10),
                 action(6, vector="body")])
    genius = state[f"{PROFILE}|genius|v1".encode()]
    assert genius.step_index == 2
    assert genius.draft_skipped_at == (BASE + timedelta(minutes=10)).timestamp()
    assert genius.applied == 5
    assert state[f"{PROFILE}|body|v1".encode()].step_index == 1


def test_the_sequence_version_comes_from_metadata() -> None:
    state = run([action(1, version="v2"), action(2)])
    assert set(state) == {f"{PROFILE}|genius|v2".encode(), f"{PROFILE}|genius|v1".encode()}


def test_a_redelivered_record_is_recognised_by_its_position() -> None:
    current = fold(None, action(1), 3, 40, 1.0)
    assert already_applied(current, 3, 40) and already_applied(current, 3, 12)
    assert not already_applied(current, 3, 41) and not already_applied(current, 2, 40)


def test_the_changelog_encoding_round_trips() -> None:
    p = fold(fold(None, action(1), 0, 0, 5.0), action(2, action_id=DRAFT_SKIP), 0, 1, 6.0)
    assert decode_progress(encode_progress(p)) == p


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(10))))
def test_the_outcome_does_not_depend_on_the_order(order: list[int]) -> None:
    """Out-of-order arrival (nothing orders events across devices)."""
    events = [action(n, completed=n % 3 != 0, minutes=n * 7 % 11,
                     action_id=DRAFT_SKIP if n in (4, 8) else "apply_genius")
              for n in range(10)]
    expected = run(events)
    shuffled = run([events[i] for i in order])
    for key, p in expected.items():
        q = shuffled[key]
        assert (q.step_index, q.draft_skipped_at, q.applied) == (
            p.step_index, p.draft_skipped_at, p.applied)
