"""Fuzzed input through the real pipeline: malformed bytes, wrong types, huge and
deep values, bad keys, timestamps out of range, mixed batches. The worker and the sink must
never crash, every invalid record must reach the DLQ with a reason, and only events the
validator accepts may reach PostgreSQL."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from streams.errors import InvalidEvent
from streams.events import decode_record
from streams.lab.loadgen import Expected
from streams.lab.outcome import read_outcome
from tests.integration.conftest import Pipeline, query_one

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ODD_VALUES: list[Any] = [None, "", 0, -1, 2**63 - 1, 1e308, -0.0, [], {}, "x" * 5000, "\u0000",
                         "\U0001f600" * 10, True, [[[[[]]]]], {"a": {"b": {"c": 1}}}, "NaN"]
FIELDS = ["id", "student_id", "kind", "delta", "created_at", "word_set_id", "homework_id",
          "metadata"]


def valid_event(rng: random.Random, student: str, now: datetime) -> dict[str, Any]:
    return {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "student_id": student,
            "kind": rng.choice(["typing", "quiz", "adjustment"]), "delta": rng.randint(0, 50),
            "created_at": (now - timedelta(minutes=rng.randint(0, 600))).isoformat()}


def mutate(rng: random.Random, doc: dict[str, Any], now: datetime) -> dict[str, Any] | bytes:
    """One random way of breaking (or not) an event: a field replaced, removed or added, a
    timestamp out of range or not a date, metadata too large, the JSON bytes damaged."""
    doc = dict(doc)
    move = rng.randrange(9)
    if move == 0:
        doc[rng.choice(FIELDS)] = rng.choice(ODD_VALUES)
    elif move == 1:
        doc.pop(rng.choice(FIELDS), None)
    elif move == 2:
        doc["surprise"] = rng.choice(ODD_VALUES)
    elif move == 3:
        doc["created_at"] = rng.choice([
            (now + timedelta(days=10)).isoformat(), (now - timedelta(days=800)).isoformat(),
            "2026-02-30T00:00:00Z", "2026-11-20T10:00:00", "yesterday"])
    elif move == 4:
        doc["metadata"] = {"blob": "y" * rng.choice([10, 3000, 5000, 70000])}
    elif move == 5:
        raw = bytearray(orjson.dumps(doc))
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    elif move == 6:
        return orjson.dumps(doc)[: rng.randint(0, 60)]
    elif move == 7:
        return b"[" * 2000 + b"]" * 2000
    # move 8: unchanged (valid)
    return doc


def fuzz_records(n: int, seed: int) -> list[tuple[bytes | None, bytes | None]]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus
    now = datetime.now(UTC)
    students = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(20)]
    out: list[tuple[bytes | None, bytes | None]] = []
    for _ in range(n):
        student = rng.choice(students)
        key: bytes | None = student.encode()
        if rng.random() < 0.05:
            key = rng.choice([None, b"", b"\xff\xfe", rng.choice(students).encode()])
        if rng.random() < 0.15:  # a batched record, sometimes with a bad event in it
            items = [mutate(rng, valid_event(rng, student, now), now) if rng.random() < 0.2
                     else valid_event(rng, student, now) for _ in range(rng.randint(0, 6))]
            value: bytes | None = b"[" + b",".join(
                i if isinstance(i, bytes) else orjson.dumps(i) for i in items) + b"]"
        else:
            doc = mutate(rng, valid_event(rng, student, now), now)
            value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        if rng.random() < 0.01:
            value = None
        out.append((key, value))
    return out


def test_fuzzed_records_never_stop_the_pipeline_and_never_reach_postgresql(
        pipeline: Pipeline) -> None:
    s = pipeline.settings
    records = fuzz_records(1500, seed=5)
    expected = Expected(records=len(records))
    valid_ids: set[str] = set()
    students: dict[str, list[Any]] = {}
    now = time.time()
    for key, value in records:
        try:
            events = decode_record(key, value, s.limits(), None, now)
        except InvalidEvent as exc:
            expected.invalid[exc.reason] = expected.invalid.get(exc.reason, 0) + 1
            continue
        for ev in events:
            if ev.id not in valid_ids:
                valid_ids.add(ev.id)
                total = students.setdefault(ev.student_id, [0, 0, None])
                total[0] += ev.delta
    expected.valid_unique = len(valid_ids)
    assert expected.valid_unique > 300 and sum(expected.invalid.values()) > 500
    assert len(expected.invalid) >= 6, expected.invalid  # many different reasons

    pipeline.start()
    pipeline.publish(records)  # type: ignore[arg-type]
    pipeline.wait_caught_up()
    assert all(p.alive() for p in pipeline.procs.values())
    outcome = read_outcome(s, Expected())
    assert outcome.dlq == expected.invalid
    assert outcome.ledger_rows == expected.valid_unique
    assert outcome.ledger_vs_totals == []
    ids = {str(r) for r in query_one(s.database_url, "SELECT array_agg(id) FROM xp_events")[0]}  # type: ignore[union-attr]
    assert ids == valid_ids
    for student, (xp, _, _) in students.items():
        row = query_one(s.database_url, "SELECT coalesce(sum(delta), 0) FROM xp_events "
                        "WHERE student_id = %s", student)
        assert row[0] == xp
