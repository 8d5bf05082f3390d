"""Action events end to end : the action topic -> DLQ | action ledger, and the
worker's vector progress fold -> ``vector_progress``; duplicates, out-of-order arrival, invalid
records and a kill -9 of the worker; then the verification queries, backfill and rollback."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from streams.actions.fold import DRAFT_SKIP
from streams.audit.dlq import count_dlq
from streams.audit.verify import VECTORS, backfill_vectors, verify
from streams.db.migrate import migrate, rollback
from streams.lab.loadgen import LoadSpec, generate, publish_records
from streams.settings import Settings
from tests.integration.conftest import Pipeline, query_one, streams
from tests.integration.test_pipeline import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class ActionWorkload:
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    progress: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    """(profile, vector) -> [step_index, draft_skipped_at]: the model's expectation."""
    invalid: int = 0


def action_workload(n: int, seed: int) -> ActionWorkload:
    """``n`` action events of 40 profiles, published out of time order, with 10% duplicates,
    5 conflicting re-sends and 3% invalid records; the expected progress by the fold's rules
    computed independently (counts and minimums over distinct ids)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload
    now = datetime.now(UTC).replace(microsecond=0)
    profiles = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(40)]
    w = ActionWorkload()
    originals: list[tuple[bytes, bytes]] = []
    for _ in range(n):
        profile, vector = rng.choice(profiles), rng.choice(VECTORS)
        at = now - timedelta(minutes=rng.randint(0, 5000))  # arrival order is not time order
        kind = rng.random()
        doc = {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
               "action_id": DRAFT_SKIP if kind < 0.1 else f"apply_{vector}",
               "profile_id": profile, "source": "dashboard", "vector": vector,
               "selected_at": at.isoformat(),
               "completed_at": (at + timedelta(minutes=3)).isoformat() if kind > 0.4 else None,
               "duration": rng.choice([None, 12.6, 300]), "mode": "self_guided"}
        record = (profile.encode(), orjson.dumps(doc))
        w.records.append(record)
        originals.append(record)
        w.ids.add(doc["id"])
        state = w.progress.setdefault((profile, vector), [0, None])
        if doc["action_id"] == DRAFT_SKIP:
            state[1] = at if state[1] is None else min(state[1], at)
        elif doc["completed_at"] is not None:
            state[0] += 1
    w.records += rng.sample(originals, n // 10)  # duplicates, later
    for key, value in rng.sample(originals, 5):  # conflicts: same id, other content: ignored
        w.records.append((key, orjson.dumps({**orjson.loads(value), "source": "feed"})))
    for i in range(n * 3 // 100):
        key = rng.choice(profiles).encode()
        w.records.insert(rng.randrange(len(w.records)), (key, [
            b"{not json", orjson.dumps({"id": "x", "profile_id": key.decode()}),
            orjson.dumps({"id": str(uuid.uuid4()), "action_id": "a", "profile_id":
                          str(uuid.uuid4()), "source": "s", "vector": "mind",
                          "selected_at": now.isoformat()})][i % 3]))
        w.invalid += 1
    return w


def assert_progress(s: Settings, w: ActionWorkload) -> None:
    with psycopg.connect(s.database_url) as conn:
        rows = conn.execute("SELECT profile_id, vector, step_index, draft_skipped_at "
                            "FROM vector_progress WHERE version = 'v1'").fetchall()
        ledger = {str(r[0]) for r in conn.execute("SELECT id FROM action_events")}
    got = {(str(p), v): [step, skipped] for p, v, step, skipped in rows}
    assert got == {k: list(v) for k, v in w.progress.items()}
    assert ledger == w.ids


def test_action_events_fold_into_vector_progress_exactly(settings: Settings,
                                                         tmp_path: Path) -> None:
    s = settings.with_(table_store="rocksdb://")
    w = action_workload(3000, seed=51)
    xp_records, xp_expected = generate(LoadSpec(events=2000, students=50, seed=52,
                                                max_record_bytes=s.max_record_bytes))
    pipeline = Pipeline(s, tmp_path / "logs", actions=True)
    try:
        pipeline.start()
        half = len(w.records) // 2
        asyncio.run(publish_records(s, w.records[:half], topic=s.action_topic))  # type: ignore[arg-type]
        pipeline.publish(xp_records)

        def folded() -> int:
            return int(query_one(s.database_url,  # type: ignore[call-overload]
                                 "SELECT coalesce(sum(applied), 0) FROM vector_progress")[0])
        wait_for(lambda: folded() > 100, 120, "the worker to fold some action events", 0.05)
        pipeline.kill("worker")  # kill -9 mid-stream: RocksDB and changelogs ahead of commits
        asyncio.run(publish_records(s, w.records[half:], topic=s.action_topic))  # type: ignore[arg-type]
        pipeline.start("worker")
        pipeline.wait_caught_up()
        assert_progress(s, w)
        pipeline.assert_exact(xp_expected)
        dlq = asyncio.run(count_dlq(s.with_(xp_topic=s.action_topic)))
        assert sum(dlq.values()) == w.invalid, dlq
    finally:
        pipeline.stop()

    # the verification queries: a profile with progress in one vector only fails the
    # five-vectors check until the backfill; the other checks pass
    newcomer = str(uuid.uuid4())
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO vector_progress (profile_id, vector, step_index, applied) "
                     "VALUES (%s, 'mind', 1, 1)", (newcomer,))
    found, counts = verify(s.database_url)
    assert counts["action_events"] == len(w.ids)
    assert [c.name for c in found if not c.ok] == [found[-1].name]
    assert found[-1].sample[0][0] == uuid.UUID(newcomer)
    assert backfill_vectors(s.database_url) == 4
    done = streams(["verify"], s)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    folded_rows = query_one(s.database_url,
                            "SELECT count(*) FROM vector_progress WHERE applied > 0")
    assert folded_rows[0] == len(w.progress) + 1  # the backfill added rows, changed none


def test_rollback_undoes_migrations_newest_first_and_migrate_reapplies(settings: Settings) -> None:
    url = settings.database_url
    assert rollback(url, 2) == ["V004__action_events.sql", "V003__roles_and_rls.sql"]
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"action_events", "vector_progress", "xp_parent_links"}.isdisjoint(tables)
    assert {"xp_events", "xp_totals"} <= tables
    refused = streams(["migrate", "--rollback", "1"], settings, stdin=b"n\n")
    assert refused.returncode == 1 and b"Aborted" in refused.stderr
    assert migrate(url) == ["V003__roles_and_rls.sql", "V004__action_events.sql"]
    done = streams(["migrate", "--rollback", "0", "--yes"], settings)
    assert done.returncode == 0, done.stderr.decode()
    assert b"V001__init_schema.sql" in done.stdout
    assert migrate(url)[:1] == ["V001__init_schema.sql"]
