"""Validation of XP records against schemas/xp_event.v1.json (DESIGN.md section 3)."""

from __future__ import annotations

import orjson
import pytest

from streams.errors import InvalidEvent
from streams.events import decode_xp

STUDENT = "0b7e4c1a-5d2f-4e3b-8a9c-1d2e3f4a5b6c"


def event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "6F1C3A52-0D4E-4B8A-9D61-0C2F5E7A9B10", "student_id": STUDENT, "kind": "typing",
        "delta": 10, "created_at": "2026-11-20T08:15:30.123+01:00",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def reason_of(key: bytes | None, value: bytes, max_bytes: int = 65536) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode_xp(key, value, max_bytes)
    return info.value.reason


def test_valid_event_is_decoded_with_lower_case_ids() -> None:
    ev = decode_xp(STUDENT.encode(), orjson.dumps(event()), 65536)
    assert ev.id == "6f1c3a52-0d4e-4b8a-9d61-0c2f5e7a9b10"
    assert ev.delta == 10 and ev.kind == "typing" and ev.is_game
    assert ev.created_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"id": "6f1c', "bad_json"),
        (orjson.dumps(event(kind=...)), "schema"),
        (orjson.dumps(event(delta="ten")), "schema"),
        (orjson.dumps(event(delta=1.5)), "schema"),
        (orjson.dumps(event(created_at="2026-11-20T08:15:30")), "schema"),
        (orjson.dumps(event(created_at="2026-02-30T08:15:30Z")), "bad_timestamp"),
        (orjson.dumps(event(id="not-a-uuid")), "schema"),
        (orjson.dumps(event(extra=1)), "schema"),
        (orjson.dumps(event(delta=-5)), "negative_delta"),
        (orjson.dumps([1, 2]), "schema"),
    ],
)
def test_invalid_records_get_their_reason(value: bytes, reason: str) -> None:
    assert reason_of(STUDENT.encode(), value) == reason


def test_negative_delta_is_allowed_for_adjustment_only() -> None:
    ev = decode_xp(STUDENT.encode(), orjson.dumps(event(kind="adjustment", delta=-5)), 65536)
    assert ev.delta == -5 and not ev.is_game


def test_key_must_be_the_student() -> None:
    assert reason_of(b"someone-else", orjson.dumps(event())) == "key_mismatch"
    assert reason_of(None, orjson.dumps(event())) == "key_mismatch"
    assert decode_xp(STUDENT.upper().encode(), orjson.dumps(event()), 65536)


def test_oversized_is_rejected_before_parsing() -> None:
    assert reason_of(STUDENT.encode(), b"x" * 300, max_bytes=256) == "oversized"


def test_fingerprint_ignores_key_order_but_not_content() -> None:
    a = decode_xp(STUDENT.encode(), orjson.dumps(event()), 65536)
    reordered = dict(reversed(list(event().items())))
    b = decode_xp(STUDENT.encode(), orjson.dumps(reordered), 65536)
    c = decode_xp(STUDENT.encode(), orjson.dumps(event(delta=11)), 65536)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_record_must_sit_in_its_keys_partition() -> None:
    from streams.events import partition_for

    home = partition_for(STUDENT.encode(), 12)
    assert decode_xp(STUDENT.encode(), orjson.dumps(event()), 65536, (home, 12))
    with pytest.raises(InvalidEvent) as info:
        decode_xp(STUDENT.encode(), orjson.dumps(event()), 65536, ((home + 1) % 12, 12))
    assert info.value.reason == "wrong_partition"
