"""``streams dlq`` on the real stack (Apache Kafka, PostgreSQL, the worker and the sinks):
list and show find the poison records, a corrected batch replayed lands in the ledger
exactly once, and a second replay changes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from tests.integration.conftest import Pipeline, query_one, streams, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ledger(pipeline: Pipeline, ids: list[str]) -> tuple[int, int]:
    """(rows, their XP) of ``ids`` in the ledger."""
    row = query_one(pipeline.settings.database_url,
                    "SELECT count(*), coalesce(sum(delta), 0) FROM xp_events "
                    "WHERE id = ANY(%s::uuid[])", ids)
    return int(row[0]), int(row[1])  # type: ignore[call-overload]


def test_poison_is_found_fixed_and_replayed_exactly_once(pipeline: Pipeline,
                                                         tmp_path: Path) -> None:
    s = pipeline.settings
    student = str(uuid.uuid4())
    fine = {"id": str(uuid.uuid4()), "student_id": student, "kind": "quiz", "delta": 3,
            "created_at": "2026-12-01T10:00:00Z"}
    broken = [{"id": str(uuid.uuid4()), "student_id": student, "kind": "quiz",
               "created_at": f"2026-12-01T10:0{i}:00Z"} for i in range(4)]  # no delta
    records = [(student.encode(), orjson.dumps(e)) for e in [fine, *broken]]
    records.append((student.encode(), b"{not json"))
    pipeline.start()
    pipeline.publish(records)
    pipeline.wait_caught_up()

    listed = orjson.loads(streams(["dlq", "list", "--topic", "xp", "--json"], s).stdout)
    assert sorted((r["reason"], r["records"]) for r in listed) == [("bad_json", 1),
                                                                  ("schema", 4)]
    shown = orjson.loads(streams(["dlq", "show", "--reason", "schema", "--json"], s).stdout)
    assert [d["value"]["id"] for d in shown] == [e["id"] for e in broken]
    assert all(d["headers"]["source_topic"] == s.xp_topic for d in shown)

    fixed = tmp_path / "fixed.jsonl"
    fixed.write_bytes(b"\n".join(orjson.dumps({**d["value"], "delta": 5}) for d in shown))
    args = ["dlq", "replay", "--reason", "schema", "--payload", str(fixed)]
    dry = streams([*args, "--dry-run"], s)
    assert dry.returncode == 0 and b"would send 4 records" in dry.stdout, dry
    assert ledger(pipeline, [e["id"] for e in broken]) == (0, 0)
    done = streams(args, s)
    assert done.returncode == 0 and b"sent 4 records" in done.stdout, done
    ids = [e["id"] for e in broken]
    wait_for(lambda: ledger(pipeline, ids) == (4, 20), 90, "the replayed batch in the ledger")
    assert streams(args, s).returncode == 0  # again: deduped by event id
    pipeline.wait_caught_up()
    assert ledger(pipeline, ids) == (4, 20)
    totals = query_one(s.database_url, "SELECT total_xp FROM xp_totals WHERE student_id = %s",
                       student)
    assert int(totals[0]) == 3 + 20  # type: ignore[call-overload]

    bad_json = streams(["dlq", "replay", "--reason", "bad_json", "--dry-run"], s)
    assert bad_json.returncode == 0 and b"would send 1 record " in bad_json.stdout
