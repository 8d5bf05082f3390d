"""Benchmark of ``streams reconcile`` on a large ledger: ``python -m streams.lab.baselines``.

Fills a scratch schema (``xp_bench``: the real ``xp_events``/``xp_totals`` definitions, indexes
included) in DATABASE_URL with ``--rows`` ledger rows over ``--students`` students, then times,
in the same run: a sequential ``count(*)`` of the ledger (the floor of any full comparison), the
reconciliation's full comparison, and a re-check of 1,000 students by index. Drops the schema
afterwards, leaving the database as it found it. Prints one table (``--json`` for scripts).
"""

from __future__ import annotations

import time

import click
import orjson
from psycopg import sql
from rich.console import Console
from rich.table import Table

from streams.db.connect import connect
from streams.db.queries import query
from streams.lab.queries import lab_query
from streams.settings import Settings

SCHEMA = "xp_bench"

def _timed(conn: object, statement: object, params: dict[str, object] | None = None,
           repeat: int = 3) -> tuple[float, object]:
    """Best of ``repeat`` runs (seconds), and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = conn.execute(statement, params).fetchall()  # type: ignore[attr-defined]
        best = min(best, time.perf_counter() - started)
    return best, result


@click.command()
@click.option("--rows", default=5_000_000, show_default=True, type=click.IntRange(1000))
@click.option("--students", default=100_000, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True)
def main(rows: int, students: int, as_json: bool) -> None:
    """Time the reconciliation on ROWS ledger rows."""
    url = Settings.from_env().database_url
    with connect(url, autocommit=True) as conn:
        conn.execute(lab_query("create_schema", schema=SCHEMA))
        try:
            conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(SCHEMA)))
            started = time.perf_counter()
            conn.execute(lab_query("fill_ledger"), {"rows": rows, "students": students})
            conn.execute(lab_query("totals_from_ledger"))
            fill_s = time.perf_counter() - started
            conn.execute("VACUUM ANALYZE xp_events, xp_totals")
            scan_s, _ = _timed(conn, lab_query("count_ledger"))
            full_s, found = _timed(conn, query("mismatched_students"))
            some = [r[0] for r in conn.execute(lab_query("some_students"))]
            recheck_s, _ = _timed(conn, query("student_balances"), {"students": some})
        finally:
            conn.execute("RESET search_path")
            conn.execute(lab_query("drop_schema", schema=SCHEMA))
    figures = {"ledger_rows": rows, "students": students, "fill_seconds": round(fill_s, 1),
               "seq_count_seconds": round(scan_s, 3), "full_compare_seconds": round(full_s, 3),
               "full_compare_vs_seq_count": round(full_s / scan_s, 2),
               "mismatched": len(found),  # type: ignore[arg-type]
               "recheck_1000_students_seconds": round(recheck_s, 3)}
    if as_json:
        click.echo(orjson.dumps(figures).decode())
        return
    out = Table(title=f"reconcile on {rows:,} ledger rows, {students:,} students (best of 3)")
    out.add_column("what")
    out.add_column("figure", justify="right")
    for name, value in figures.items():
        out.add_row(name, f"{value:,}")
    Console().print(out)


if __name__ == "__main__":
    main()
