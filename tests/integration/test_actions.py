"""Action events end to end : the action topic -> DLQ | action ledger, and the
worker's vector progress fold -> ``vector_progress``; duplicates, out-of-order arrival, invalid
records and a kill -9 of the worker; then the verification queries, backfill and rollback."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg
import pytest

from streams.audit.verify import backfill_vectors, verify
from streams.db.migrate import migrate, rollback
from streams.lab.loadgen import LoadSpec, generate, generate_actions, publish_records
from streams.lab.outcome import read_action_outcome
from streams.settings import Settings
from tests.integration.conftest import Pipeline, query_one, streams
from tests.integration.test_pipeline import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]




def test_action_events_fold_into_vector_progress_exactly(settings: Settings,
                                                         tmp_path: Path) -> None:
    s = settings.with_(table_store="rocksdb://")
    records, w = generate_actions(3000, profiles=40, seed=51)
    xp_records, xp_expected = generate(LoadSpec(events=2000, students=50, seed=52,
                                                max_record_bytes=s.max_record_bytes))
    pipeline = Pipeline(s, tmp_path / "logs", actions=True)
    try:
        pipeline.start()
        half = len(records) // 2
        asyncio.run(publish_records(s, records[:half], topic=s.action_topic))  # type: ignore[arg-type]
        pipeline.publish(xp_records)

        def folded() -> int:
            return int(query_one(s.database_url,  # type: ignore[call-overload]
                                 "SELECT coalesce(sum(applied), 0) FROM vector_progress")[0])
        wait_for(lambda: folded() > 100, 120, "the worker to fold some action events", 0.05)
        pipeline.kill("worker")  # kill -9 mid-stream: RocksDB and changelogs ahead of commits
        asyncio.run(publish_records(s, records[half:], topic=s.action_topic))  # type: ignore[arg-type]
        pipeline.start("worker")
        pipeline.wait_caught_up()
        outcome = read_action_outcome(s, w)
        assert not outcome.problems, outcome.problems
        assert outcome.ledger_rows == len(w.ids) and outcome.dlq == w.invalid > 0
        pipeline.assert_exact(xp_expected)
        # the progress and sightings folded before the kill -9 and again after it: a fresh
        # recovery of every table equals the ledgers
        audit = streams(["audit-changelogs", "--json"], s)
        assert audit.returncode == 0, audit.stdout.decode()[-2000:]
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
    assert rollback(url, 2) == ["V007__event_identity.sql", "V006__seasons_and_rules.sql",
                                "V005__xp_grant.sql",
                                "V004__action_events.sql", "V003__roles_and_rls.sql"]
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"action_events", "vector_progress", "xp_parent_links", "xp_awards",
            "xp_claim_outcomes", "xp_streaks", "xp_users", "xp_rules",
            "xp_seasons"}.isdisjoint(tables)
    assert {"xp_events", "xp_totals"} <= tables
    refused = streams(["migrate", "--rollback", "1"], settings, stdin=b"n\n")
    assert refused.returncode == 1 and b"Aborted" in refused.stderr
    assert migrate(url) == ["V003__roles_and_rls.sql", "V004__action_events.sql",
                            "V005__xp_grant.sql", "V006__seasons_and_rules.sql",
                            "V007__event_identity.sql"]
    done = streams(["migrate", "--rollback", "0", "--yes"], settings)
    assert done.returncode == 0, done.stderr.decode()
    assert b"V001__init_schema.sql" in done.stdout
    assert migrate(url)[:1] == ["V001__init_schema.sql"]
