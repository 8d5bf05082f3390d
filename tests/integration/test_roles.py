"""Database roles and row-level security (sql/V003__roles_and_rls.sql): each role
connects for real and is shown what it can and cannot see and do; the pipeline runs with the
writer role only."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import errors

from streams.dev.procs import free_port
from streams.dev.stack import PipelineProcess
from streams.lab.loadgen import LoadSpec, generate
from streams.settings import Settings
from tests.integration.conftest import Pipeline, streams

pytestmark = [pytest.mark.integration]

A, B, C = (str(uuid.uuid4()) for _ in range(3))
PARENT = str(uuid.uuid4())


def as_user(url: str, user: str) -> str:
    """``url`` with ``user`` instead of its user (the local cluster trusts loopback logins)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}"))


def login_role(url: str, group: str) -> str:
    """A new login role that is a member of ``group``; returns its name."""
    name = f"t_{group}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE {group}")
    return name


@contextmanager
def session(url: str, group: str, user_id: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection as a fresh member of ``group``, acting for ``user_id``."""
    conn = psycopg.connect(as_user(url, login_role(url, group)), autocommit=True)
    try:
        if user_id is not None:
            conn.execute("SELECT set_config('xp.user_id', %s, false)", (user_id,))
        yield conn
    finally:
        conn.close()


@pytest.fixture
def url(settings: Settings) -> str:
    """The test database with ledger and totals rows of learners A, B, C; PARENT -> A, B."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for n, student in enumerate((A, B, C)):
            conn.execute(
                "INSERT INTO xp_events (id, student_id, kind, delta, created_at, fingerprint, "
                "topic, \"partition\", \"offset\") VALUES (%s, %s, 'quiz', 10, now(), "
                "'\\x00', 't', 0, %s)", (str(uuid.uuid4()), student, n))
            conn.execute("INSERT INTO xp_totals (student_id, total_xp, version) "
                         "VALUES (%s, 10, 1)", (student,))
        conn.execute("INSERT INTO xp_parent_links (parent_id, student_id) VALUES (%s, %s), "
                     "(%s, %s)", (PARENT, A, PARENT, B))
    return settings.database_url


def visible(conn: psycopg.Connection, table: str) -> set[str]:
    return {str(r[0]) for r in conn.execute(f"SELECT student_id FROM {table}")}


@pytest.mark.parametrize("table", ["xp_events", "xp_totals"])
def test_each_role_sees_only_its_rows(url: str, table: str) -> None:
    with session(url, "xp_learner", A) as learner:
        assert visible(learner, table) == {A}
    with session(url, "xp_learner", None) as nobody:
        assert visible(nobody, table) == set()
    with session(url, "xp_parent", PARENT) as parent:
        assert visible(parent, table) == {A, B}
    with session(url, "xp_parent", A) as not_a_parent:
        assert visible(not_a_parent, table) == set()
    for group in ("xp_admin", "xp_reader", "xp_writer"):
        with session(url, group) as conn:
            assert visible(conn, table) == {A, B, C}


@pytest.mark.parametrize("group", ["xp_learner", "xp_parent", "xp_admin", "xp_reader"])
def test_no_client_role_can_write_the_ledger_or_the_totals(url: str, group: str) -> None:
    statements = [
        "INSERT INTO xp_events (id, student_id, kind, delta, created_at, fingerprint, topic, "
        f"\"partition\", \"offset\") VALUES (gen_random_uuid(), '{A}', 'quiz', 1, now(), "
        "'\\x00', 't', 0, 99)",
        f"UPDATE xp_events SET delta = 1000 WHERE student_id = '{A}'",
        f"DELETE FROM xp_events WHERE student_id = '{A}'",
        f"INSERT INTO xp_totals (student_id, total_xp) VALUES ('{uuid.uuid4()}', 5)",
        f"UPDATE xp_totals SET total_xp = 1000000 WHERE student_id = '{A}'",
        f"DELETE FROM xp_totals WHERE student_id = '{A}'",
        "TRUNCATE xp_events",
        f"INSERT INTO xp_parent_links VALUES ('{PARENT}', '{C}')",
    ]
    with session(url, group, PARENT if group == "xp_parent" else A) as conn:
        for sql in statements:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql)


def test_the_writer_may_only_add_ledger_rows_and_write_totals_and_offsets(url: str) -> None:
    with session(url, "xp_writer") as writer:
        writer.execute(
            "INSERT INTO xp_events (id, student_id, kind, delta, created_at, fingerprint, topic, "
            "\"partition\", \"offset\") VALUES (gen_random_uuid(), %s, 'quiz', 1, now(), "
            "'\\x00', 't', 0, 100) ON CONFLICT (id, student_id) DO NOTHING", (C,))
        writer.execute("UPDATE xp_totals SET total_xp = 11, version = 2 WHERE student_id = %s",
                       (C,))
        writer.execute("INSERT INTO consumer_offsets (consumer_group, topic, \"partition\", "
                       "next_offset) VALUES ('g', 't', 0, 1)")
        for sql in ("DELETE FROM xp_events", "UPDATE xp_events SET delta = 0",
                    "TRUNCATE xp_totals", "DELETE FROM xp_totals",
                    "SELECT * FROM xp_parent_links", "CREATE TABLE sneaky (x int)",
                    "DROP TABLE xp_events"):
            with pytest.raises(errors.InsufficientPrivilege):
                writer.execute(sql)


def test_the_pipeline_runs_with_the_writer_role_only(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Least privilege: worker, ledger sink and totals writer connect as a member of
    xp_writer; the outcome is exact."""
    writer_url = as_user(settings.database_url, login_role(settings.database_url, "xp_writer"))
    s = settings.with_(database_url=writer_url)
    pipeline = Pipeline(s, tmp_path)
    records, expected = generate(LoadSpec(events=3000, students=100, seed=31,
                                          max_record_bytes=s.max_record_bytes))
    try:
        pipeline.start()
        pipeline.publish(records)
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
    finally:
        assert pipeline.stop() == {"worker": 0, "totals-writer": 0, "sink": 0}


def test_a_password_in_the_database_url_never_appears_in_messages(settings: Settings,
                                                                   tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Least privilege and secrets: a command and a sink that cannot connect say so
    in one line, with the URL's password redacted."""
    bad = settings.with_(database_url=f"postgresql://xp:pw-5ecret@127.0.0.1:{free_port()}/xp",
                         db_retry_max_seconds=0.2)
    done = streams(["verify"], bad)
    err = done.stderr.decode()
    assert done.returncode != 0 and "pw-5ecret" not in err + done.stdout.decode()
    assert "xp:***@127.0.0.1" in err and len(err.strip().splitlines()) == 1, err
    sink = PipelineProcess("sink", bad, tmp_path / "sink.log", free_port())
    sink.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "***@" not in (
                tmp_path / "sink.log").read_text(errors="replace"):
            time.sleep(0.2)
    finally:
        sink.stop()
    log = (tmp_path / "sink.log").read_text(errors="replace")
    assert "xp:***@127.0.0.1" in log and "pw-5ecret" not in log


GRANT_TABLES = ["xp_claim_outcomes", "xp_awards", "xp_streaks", "xp_users"]


@pytest.fixture
def grant_url(url: str) -> str:
    """``url`` with a row of learners A, B, C in every grant table."""
    with psycopg.connect(url, autocommit=True) as conn:
        for n, student in enumerate((A, B, C)):
            claim = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO xp_claim_outcomes (outcome_id, claim_id, user_id, type, outcome, "
                "decided_at, body, topic, \"partition\", \"offset\") VALUES (gen_random_uuid(),"
                " %s, %s, 'daily_login_claim', 'awarded', now(), '{}', 't', 0, %s)",
                (claim, student, n))
            conn.execute(
                "INSERT INTO xp_awards (award_id, user_id, reward_day_id, reward_tz, xp_awarded,"
                " streak_day, policy_id, policy_version, claim_id, claimed_at, tzdata) VALUES "
                "(gen_random_uuid(), %s, current_date, 'UTC', 10, 1, 'daily_login', 1, %s, "
                "now(), '2026a')", (student, claim))
            conn.execute("INSERT INTO xp_streaks (user_id, model_state) VALUES (%s, '{}')",
                         (student,))
            conn.execute("INSERT INTO xp_users (user_id, reward_tz) VALUES (%s, 'UTC')",
                         (student,))
    return url


@pytest.mark.parametrize("table", GRANT_TABLES)
def test_grant_tables_show_each_role_only_its_rows(grant_url: str, table: str) -> None:
    def users(conn: psycopg.Connection) -> set[str]:
        return {str(r[0]) for r in conn.execute(f"SELECT user_id FROM {table}")}

    with session(grant_url, "xp_learner", A) as learner:
        assert users(learner) == {A}
    with session(grant_url, "xp_parent", PARENT) as parent:
        assert users(parent) == {A, B}
    for group in ("xp_admin", "xp_reader", "xp_writer"):
        with session(grant_url, group) as conn:
            assert users(conn) == {A, B, C}
    for group in ("xp_learner", "xp_parent", "xp_admin", "xp_reader"):
        with session(grant_url, group, A) as conn:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"UPDATE {table} SET user_id = user_id")
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"DELETE FROM {table}")
    with session(grant_url, "xp_writer") as writer:
        with pytest.raises(errors.InsufficientPrivilege):
            writer.execute(f"DELETE FROM {table}")
