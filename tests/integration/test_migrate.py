"""Migrations on a real PostgreSQL: applied in order, once, checksummed."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from streams.db.migrate import SQL_DIR, migrate
from streams.errors import MigrationError

pytestmark = pytest.mark.integration


def test_migrations_apply_once_and_detect_changes(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = stack.postgres.create_database("migrate_test")
    sql = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql)
    assert migrate(url, sql) == ["V001__init_schema.sql", "V002__batched_records.sql",
                                 "V003__roles_and_rls.sql", "V004__action_events.sql",
                                 "V005__xp_grant.sql", "V006__seasons_and_rules.sql",
                                 "V007__event_identity.sql"]
    assert migrate(url, sql) == []
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"xp_events", "xp_totals", "consumer_offsets", "schema_migrations"} <= tables
    v001 = sql / "V001__init_schema.sql"
    v001.write_text("-- edited\n" + v001.read_text())
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(url, sql)
    (sql / "V099__broken.sql").write_text("CREATE TABLE nope (")
    (sql / "V001__init_schema.sql").write_text((SQL_DIR / "V001__init_schema.sql").read_text())
    with pytest.raises(MigrationError, match="V099__broken.sql failed"):
        migrate(url, sql)


def test_every_migration_has_a_rollback_file() -> None:
    names = {p.name for p in SQL_DIR.glob("V*.sql")}
    assert names and names == {p.name for p in (SQL_DIR / "rollback").glob("V*.sql")}
