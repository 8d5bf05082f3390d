"""Operating the pipeline: ``streams monitor``, ``status``, ``publish``, ``migrate``,
``create-topics``, ``settings``."""

from __future__ import annotations

import asyncio
import sys

import click

from streams.cli.base import (
    load_settings,
    main,
    quiet_clients,
    run_until_signal,
    setup_logging,
)
from streams.settings import redact_url


@main.command()
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between lag samples.")
@click.option("--reconcile-every", default=60.0, show_default=True, type=click.FloatRange(1),
              help="Seconds between reconciliations (run only when every group is at lag 0).")
def monitor(interval: float, reconcile_every: float) -> None:
    """Export consumer lag (from the broker) and reconciliation results as Prometheus metrics."""
    from streams.health import Health, serve
    from streams.metrics import MonitorMetrics
    from streams.monitor import Monitor

    setup_logging()
    settings = load_settings()
    metrics, health = MonitorMetrics(), Health()
    monitor = Monitor(settings, metrics, interval, reconcile_every)
    health.set_readiness(monitor.readiness)
    serve(settings.metrics_port, metrics.registry, health)
    run_until_signal(monitor.run, health)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--partitions", is_flag=True, help="Also a table per stage with its partitions.")
@click.option("--watch", type=click.FloatRange(0.5), default=None, metavar="SECONDS",
              help="Refresh every SECONDS until Ctrl-C.")
def status(as_json: bool, watch: float | None, partitions: bool) -> None:
    """Show each stage's lag, throughput and last commit, the DLQ by reason and the
    reconciliation (--partitions: per partition too). Exit 1 with one line when the broker
    or the database cannot be reached."""
    import orjson
    from rich.console import Console

    from streams.status import Status, collect, render

    quiet_clients()
    settings = load_settings()
    console = Console(width=None if sys.stdout.isatty() else 160)

    def show(snapshot: Status) -> None:
        if as_json:
            click.echo(orjson.dumps(snapshot.to_json(), option=orjson.OPT_INDENT_2).decode())
        else:
            render(snapshot, console, partitions)

    async def run() -> None:
        snapshot = await collect(settings)
        show(snapshot)
        while watch is not None:
            await asyncio.sleep(watch)
            snapshot = await collect(settings, previous=snapshot)
            if not as_json:
                console.clear()
            show(snapshot)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("source", type=click.File("rb"))
@click.option("--topic", help="Topic to publish to (default: XP_TOPIC).")
def publish(source: click.utils.LazyFile, topic: str | None) -> None:
    """Publish JSON lines from SOURCE, a file or - for standard input: one record a line, an
    event object or an array of one student's events (a batched record)."""
    from streams.publish import publish_lines

    quiet_clients()
    count = asyncio.run(publish_lines(load_settings(), iter(source), topic))
    click.echo(f"published {count} records")


@main.command("migrate")
@click.option("--rollback", "to_version", type=click.IntRange(0),
              help="Undo the applied migrations newer than this version (0: all), newest "
                   "first, with sql/rollback/. Drops their tables and data.")
@click.option("--yes", is_flag=True, help="Do not ask before --rollback.")
def migrate_cmd(to_version: int | None, yes: bool) -> None:
    """Apply pending SQL migrations from sql/ (each once, checksummed), or roll back."""
    from streams.db.migrate import migrate, rollback

    url = load_settings().database_url
    if to_version is None:
        applied = migrate(url)
        click.echo("applied: " + ", ".join(applied) if applied else "database is up to date")
        return
    if not yes:
        click.confirm(f"Undo every migration newer than V{to_version:03d} in "
                      f"{redact_url(url)}? Their tables and data are dropped", abort=True)
    undone = rollback(url, to_version)
    click.echo("rolled back: " + ", ".join(undone) if undone
               else f"nothing newer than V{to_version:03d} is applied")


@main.command("create-topics")
def create_topics() -> None:
    """Create the pipeline's topics if missing: input, DLQ, table changelogs."""
    from streams import kafka

    s = load_settings()
    asyncio.run(kafka.pipeline_topics(s))
    click.echo(f"topics ready for {s.xp_topic} ({s.topic_partitions} partitions)")


@main.command("settings")
@click.option("--markdown", is_flag=True,
              help="Print the table of every variable (README.md's Settings) instead.")
@click.option("--json", "as_json", is_flag=True, help="The effective settings as JSON.")
def settings_cmd(markdown: bool, as_json: bool) -> None:
    """Show the effective settings (from the environment; passwords redacted), one variable
    per line."""
    import orjson

    from streams.settings import settings_table, variable

    if markdown:
        click.echo(settings_table(), nl=False)
        return
    described = load_settings().describe()
    if as_json:
        click.echo(orjson.dumps(described, option=orjson.OPT_INDENT_2).decode())
        return
    for name, value in described.items():
        click.echo(f"{variable(name).name}={'' if value is None else value}")
