"""Validation of XP records against schemas/xp_event.v1.json (docs/design.md, Contracts)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streams.errors import InvalidEvent
from streams.events import REASONS, Limits, decode_record, decode_xp

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


# ---- input hardening -------------------------------------------------------------------

RECORD_TS = datetime(2026, 11, 20, 7, 15, 30, tzinfo=UTC).timestamp()
"""A record timestamp equal to the example event's created_at (08:15:30+01:00)."""


DEFAULT_LIMITS = Limits()


def hardened_reason(doc: dict[str, object] | bytes, timestamp_s: float | None = RECORD_TS,
                    limits: Limits = DEFAULT_LIMITS) -> str:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    with pytest.raises(InvalidEvent) as info:
        decode_record(STUDENT.encode(), value, limits, None, timestamp_s)
    return info.value.reason


def test_created_at_is_bounded_by_the_record_timestamp() -> None:
    limits = Limits(future_seconds=60, past_seconds=3600)
    doc = event()
    assert decode_record(STUDENT.encode(), orjson.dumps(doc), limits, None, RECORD_TS)
    assert decode_record(STUDENT.encode(), orjson.dumps(doc), limits, None, RECORD_TS - 59)
    assert hardened_reason(doc, RECORD_TS - 61, limits) == "timestamp_out_of_range"
    assert hardened_reason(doc, RECORD_TS + 3601, limits) == "timestamp_out_of_range"
    # a backfill carries a legacy date: only the future bound applies to it
    backfill = event(kind="backfill")
    assert decode_record(STUDENT.encode(), orjson.dumps(backfill), limits, None,
                         RECORD_TS + 10 * 365 * 86400)
    reversal = event(kind="adjustment", delta=-5, metadata={"reverses": "x", "source": "s"})
    assert decode_record(STUDENT.encode(), orjson.dumps(reversal), limits, None,
                         RECORD_TS + 10 * 365 * 86400)
    assert hardened_reason(event(kind="adjustment", delta=-5), RECORD_TS + 3601,
                           limits) == "timestamp_out_of_range"
    # no timestamp (None, or -1 from the old message format): not checked
    assert decode_record(STUDENT.encode(), orjson.dumps(doc), limits, None, None)
    assert decode_record(STUDENT.encode(), orjson.dumps(doc), limits, None, -1)


def test_metadata_is_bounded() -> None:
    small = event(metadata={"note": "x" * 100})
    big = event(metadata={"note": "x" * 5000})
    assert decode_record(STUDENT.encode(), orjson.dumps(small), Limits(), None, RECORD_TS)
    assert hardened_reason(big) == "metadata_too_large"
    assert hardened_reason(small, limits=Limits(metadata_bytes=50)) == "metadata_too_large"


@pytest.mark.parametrize("bad_id", ["6f1c3a52-0d4e-4b8a-9d61-0c2f5e7a9b1", "not-a-uuid",
                                    "6f1c3a52-0d4e-4b8a-9d61-0c2f5e7a9b10x", "", "g" * 36])
def test_malformed_uuids_are_rejected(bad_id: str) -> None:
    assert hardened_reason(event(id=bad_id)) == "schema"
    assert hardened_reason(event(word_set_id=bad_id)) == "schema"


def test_over_long_strings_are_rejected() -> None:
    assert hardened_reason(event(kind="k" * 33)) == "schema"
    assert hardened_reason(event(metadata={"source": "s" * 201})) == "schema"


def test_integral_floats_are_taken_as_integers() -> None:
    """JSON Schema counts 1.0 and 1e2 as integers; they must not reach the ledger's bigint
    column (or the fold) as floats: one such record stopped the ledger sink's COPY."""
    template = orjson.dumps(event(delta=0, metadata={"games_played": 0}))
    value = template.replace(b'"delta":0', b'"delta":1e2').replace(b'"games_played":0',
                                                                    b'"games_played":3.0')
    ev = decode_record(STUDENT.encode(), value, Limits())[0]
    assert ev.delta == 100 and type(ev.delta) is int
    assert ev.metadata is not None and type(ev.metadata["games_played"]) is int


def test_out_of_range_integers_are_rejected() -> None:
    template = orjson.dumps(event(kind="adjustment", delta=0))
    for delta in (b"1000001", b"9223372036854775808", b"-9223372036854775809", b"1e300",
                  b"18446744073709551616", b"1.5"):
        assert hardened_reason(template.replace(b'"delta":0', b'"delta":' + delta)) == "schema"


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=6),
    max_leaves=30,
)


def _valid_looking(fields: dict[str, object]) -> dict[str, object]:
    """An event with some fields replaced by arbitrary JSON."""
    return {**event(), **fields}


@settings(max_examples=400, deadline=None)
@example(orjson.dumps(event(delta=0.0)), STUDENT.encode(), None)
@given(st.binary(max_size=300) | _json.map(orjson.dumps)
       | st.dictionaries(st.sampled_from(["id", "student_id", "kind", "delta", "created_at",
                                          "word_set_id", "homework_id", "metadata", "extra"]),
                         _json, max_size=9).map(_valid_looking).map(orjson.dumps),
       st.one_of(st.none(), st.just(STUDENT.encode()), st.binary(max_size=40)),
       st.one_of(st.none(), st.floats(min_value=-1e12, max_value=1e12)))
def test_fuzz_the_validator_only_accepts_or_raises_invalid_event(
        value: bytes, key: bytes | None, timestamp_s: float | None) -> None:
    """Arbitrary bytes, arbitrary JSON and events with arbitrary fields: the validator
    returns events that satisfy every rule, or raises InvalidEvent with a known reason;
    nothing else (a crash here would be a worker crash)."""
    try:
        events = decode_record(key, value, Limits(), (0, 1), timestamp_s)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
        return
    for ev in events:
        assert ev.student_id == (key or b"").decode().lower()
        assert type(ev.delta) is int and -(10**6) <= ev.delta <= 10**6
        assert ev.delta >= 0 or ev.kind == "adjustment"
        assert ev.created_at.tzinfo is not None
        assert len(orjson.dumps(ev.metadata)) <= Limits().metadata_bytes


@pytest.mark.parametrize("where", [{"metadata": {"note": "a\u0000b"}},
                                   {"metadata": {"k\u0000": 1}},
                                   {"metadata": {"deep": [[{"x": "\u0000"}]]}},
                                   {"kind": "ty\u0000ping"}])
def test_a_string_holding_nul_is_refused_before_postgresql_sees_it(
        where: dict[str, object]) -> None:
    """PostgreSQL's text and jsonb cannot store U+0000: the ledger sink would refuse the row
    after the worker had folded the event into the totals (totals != SUM(ledger))."""
    value = orjson.dumps(event(**where))
    assert b"\\u0000" in value
    assert reason_of(STUDENT.encode(), value) in ("nul_character", "schema")
    assert reason_of(STUDENT.encode(), value) == "nul_character" or "kind" in where
    plain = orjson.dumps(event(metadata={"note": "a\\u0000b"}))  # the six characters: fine
    assert decode_xp(STUDENT.encode(), plain, 65536).metadata == {"note": "a\\u0000b"}


@pytest.mark.parametrize("depth", [253, 254, 1023])
def test_metadata_nested_past_orjsons_limit_is_too_large_not_a_crash(depth: int) -> None:
    """A 1 KB record whose metadata nests 255+ levels parsed, then made ``orjson.dumps`` raise
    ``TypeError`` in the size check: the worker exited on the same record after every restart
    (found by the hostile-input campaign)."""
    value = orjson.dumps(event(metadata="@")).replace(
        b'"@"', b'{"a":' * depth + b"1" + b"}" * depth)
    if depth < 254:
        assert decode_xp(STUDENT.encode(), value, 65536).metadata is not None
    else:
        assert reason_of(STUDENT.encode(), value) == "metadata_too_large"


@pytest.mark.parametrize("created_at", ["2026-11-20t08:15:30z", "2026-11-20T08:15:30.5z"])
def test_rfc3339_lower_case_z_is_a_valid_time(created_at: str) -> None:
    """RFC 3339 (and the schema's pattern) allow ``z``; ``datetime.fromisoformat`` does not:
    such events went to the DLQ as ``bad_timestamp``."""
    ev = decode_xp(STUDENT.encode(), orjson.dumps(event(created_at=created_at)), 65536)
    assert ev.created_at == datetime(2026, 11, 20, 8, 15, 30, ev.created_at.microsecond,
                                     tzinfo=UTC)


@pytest.mark.parametrize(("created_at", "valid"), [
    ("2026-11-20T08:15:30+14:00", True), ("2026-11-20T08:15:30-12:00", True),
    ("2026-11-20T08:15:30+15:59", True), ("2026-11-20T08:15:30-15:59", True),
    ("2026-11-20T08:15:30+16:00", False), ("2026-11-20T08:15:30-23:59", False)])
def test_a_utc_offset_postgresql_cannot_store_is_a_bad_timestamp(created_at: str,
                                                                  valid: bool) -> None:
    """RFC 3339, the schema's pattern and Python take offsets up to 23:59; PostgreSQL's
    timestamptz refuses beyond 15:59. Such an event was folded by the worker and refused by
    the ledger's database (found by the ledger-row test of tests/integration/test_sink.py):
    totals and ledger disagreed. It is now invalid everywhere alike."""
    value = orjson.dumps(event(created_at=created_at))
    if valid:
        assert decode_xp(STUDENT.encode(), value, 65536).created_text == created_at
    else:
        assert reason_of(STUDENT.encode(), value) == "bad_timestamp"
