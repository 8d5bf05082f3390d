"""Apply the numbered SQL migrations in ``sql/`` in order, each once, recorded with a checksum.

Files are named ``V<NNN>__<description>.sql`` (docs/design.md, Contracts). Each runs in its
own transaction together with its row in ``schema_migrations``; an advisory lock keeps two
processes from migrating at once. A file that was applied and then changed is an error: fix
forward with a new file.

Every migration has a rollback file of the same name in ``sql/rollback/``;
:func:`rollback` applies them newest first, down to a version, each in its own transaction
with the removal of its ``schema_migrations`` row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.errors import MigrationError

_PACKAGE = Path(__file__).resolve().parent.parent
SQL_DIR = _PACKAGE / "sql" if (_PACKAGE / "sql").is_dir() else _PACKAGE.parent / "sql"
"""Where the migration files live (their rollback files in ``rollback/`` beneath):
``streams/sql`` in an installed wheel (package data), else ``sql/`` of the source tree."""

_NAME = re.compile(r"^V(\d{3,})__([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x58505354  # "XPST": the advisory lock taken while migrating


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    """The number in its name."""
    name: str
    """The file name."""
    sql: str
    """Its text."""

    @property
    def checksum(self) -> str:
        """SHA-256 of the text, hex."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = SQL_DIR) -> list[Migration]:
    """Return the migrations in ``directory`` sorted by version.

    Raises:
        MigrationError: a ``.sql`` file is misnamed or two share a version.
    """
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: not named V<NNN>__<description>.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} also in {found[version].name}")
        found[version] = Migration(version, path.name, path.read_text())
    return [found[v] for v in sorted(found)]


def _locked(conn: psycopg.Connection) -> None:
    conn.execute(query("migrations_table"))
    conn.execute(query("migrations_lock"), {"lock": _LOCK_ID})


def migrate(url: str, directory: Path = SQL_DIR) -> list[str]:
    """Apply every pending migration to the database at ``url``.

    Returns:
        The names of the files applied now (empty when up to date).

    Raises:
        MigrationError: an applied file changed, or a file failed (its transaction is rolled
            back, earlier files stay applied).
        DatabaseUnavailable: the database cannot be reached.
    """
    migrations = discover(directory)
    applied_now: list[str] = []
    with connect(url, autocommit=True) as conn, mapped_errors(url):
        _locked(conn)
        try:
            rows = conn.execute(query("migrations_applied")).fetchall()
            applied = {v: (n, c) for v, n, c in rows}
            for mig in migrations:
                if mig.version in applied:
                    name, checksum = applied[mig.version]
                    if checksum != mig.checksum:
                        raise MigrationError(
                            f"{mig.name} was changed after it was applied (as {name}); "
                            "add a new migration instead"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(mig.sql.encode())
                        conn.execute(query("migration_record"), {
                            "version": mig.version, "name": mig.name, "checksum": mig.checksum})
                except psycopg.OperationalError:
                    raise  # unreachable database: mapped_errors turns it into DatabaseUnavailable
                except psycopg.Error as exc:
                    raise MigrationError(f"{mig.name} failed: {exc}") from exc
                applied_now.append(mig.name)
        finally:
            conn.execute(query("migrations_unlock"), {"lock": _LOCK_ID})
    return applied_now


def rollback(url: str, to_version: int, directory: Path = SQL_DIR) -> list[str]:
    """Undo the applied migrations newer than ``to_version`` (0: all), newest first, with the
    rollback files of the same names in ``directory/rollback``.

    Returns:
        The names of the migrations undone now (empty when none is newer).

    Raises:
        MigrationError: a rollback file is missing, or one failed (its transaction is rolled
            back; the migrations undone before it stay undone).
        DatabaseUnavailable: the database cannot be reached.
    """
    undone: list[str] = []
    with connect(url, autocommit=True) as conn, mapped_errors(url):
        _locked(conn)
        try:
            rows = conn.execute(query("migrations_newer"), {"version": to_version}).fetchall()
            missing = [n for _, n in rows if not (directory / "rollback" / n).exists()]
            if missing:
                raise MigrationError(f"no rollback file for {', '.join(missing)} in "
                                     f"{directory / 'rollback'}")
            for version, name in rows:
                sql = (directory / "rollback" / name).read_text()
                try:
                    with conn.transaction():
                        conn.execute(sql.encode())
                        conn.execute(query("migration_forget"), {"version": version})
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    raise MigrationError(f"rollback of {name} failed: {exc}") from exc
                undone.append(name)
        finally:
            conn.execute(query("migrations_unlock"), {"lock": _LOCK_ID})
    return undone
