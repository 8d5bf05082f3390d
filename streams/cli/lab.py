"""The harness's commands under ``streams lab``: ``loadgen``, ``demo``, ``bench``, ``chaos``,
``hostile`` (:mod:`streams.lab`); their old top-level names stay, hidden, for one release."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.cli.base import (
    Duration,
    hidden_alias,
    load_settings,
    main,
    quiet_clients,
    setup_logging,
)
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.dev.stack import LocalStack


def write_report(report: bytes, path: Path | None) -> None:
    """Write a lab command's report (JSON bytes) to ``--output`` (or its old name ``--json``)
    when one was given."""
    if path is not None:
        path.write_bytes(report)


def local_stack(partitions: int) -> LocalStack:
    """The throwaway local stack of a lab command's ``--local`` (and of ``demo``), not yet
    started: the environment's settings with ``partitions``, which
    :meth:`LocalStack.start` points at its own servers (addresses, plaintext, data directory),
    so the pipeline processes run with every other setting, the pipeline's tuning, as
    configured.

    Raises:
        click.ClickException: a setting in the environment is invalid (one line).
    """
    from streams.dev.stack import LocalStack, default_base_dir

    return LocalStack(default_base_dir(), settings=load_settings().with_(
        topic_partitions=partitions))


@main.group()
def lab() -> None:
    """The harness: bench, chaos, demo, hostile input, load generation (each on the
    configured servers or, with --local, a throwaway local stack)."""


@lab.command()
@click.option("--events", default=200_000, show_default=True, type=click.IntRange(1))
@click.option("--students", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--duplicates", "duplicate_ratio", default=0.05, show_default=True,
              type=click.FloatRange(0, 0.5), help="Share of records that resend an earlier one.")
@click.option("--conflicts", "conflict_ratio", default=0.002, show_default=True,
              type=click.FloatRange(0, 0.1), help="Share of records reusing an id, other content.")
@click.option("--invalid", "invalid_ratio", default=0.01, show_default=True,
              type=click.FloatRange(0, 0.5), help="Share of invalid records.")
@click.option("--expected", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the expected per-student outcome here (JSON).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the records as JSON lines here instead of publishing them.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 500),
              help="Pack up to this many events of one student into one record "
                   "(xp_event_batch.v1.json); 1 = one event per record.")
def loadgen(events: int, students: int, seed: int, duplicate_ratio: float, conflict_ratio: float,
            invalid_ratio: float, expected: Path, output: Path | None, batch: int) -> None:
    """Generate a seeded, realistic workload; publish it (or write it) and its expected outcome."""
    from streams.lab.loadgen import LoadSpec, batch_records, generate, publish_records

    quiet_clients()
    settings = load_settings()
    spec = LoadSpec(events=events, students=students, seed=seed, duplicate_ratio=duplicate_ratio,
                    conflict_ratio=conflict_ratio, invalid_ratio=invalid_ratio,
                    max_record_bytes=settings.max_record_bytes)
    records, outcome = generate(spec)
    if batch > 1:
        records = batch_records(records, batch, settings.max_record_bytes)
    expected.write_bytes(outcome.to_json())
    if output is not None:
        import orjson

        with output.open("wb") as f:
            for key, value in records:
                f.write(orjson.dumps({"key": key.decode("utf-8", "replace") if key else None,
                                      "value": value.decode("utf-8", "replace")}) + b"\n")
        click.echo(f"wrote {len(records)} records to {output}")
        return
    seconds = asyncio.run(publish_records(settings, records))
    click.echo(f"published {len(records)} records in {seconds:.1f} s "
               f"({len(records) / seconds:,.0f} records/s); expected outcome in {expected}")


@lab.command()
@click.option("--events", default=200_000, show_default=True, type=click.IntRange(1000))
@click.option("--students", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--partitions", default=12, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--keep", is_flag=True, help="Keep the stack's directory (logs) afterwards.")
def demo(events: int, students: int, partitions: int, seed: int, keep: bool) -> None:
    """Run the whole pipeline on the embedded local stack and prove its numbers."""
    from streams.lab.demo import run_demo

    setup_logging(default_level="WARNING")
    sys.exit(run_demo(local_stack(partitions), events=events, students=students, seed=seed,
                      keep=keep))


@lab.command()
@click.option("--events", default=200_000, show_default=True, type=click.IntRange(1000),
              help="Records of the workload (duplicates and invalid ones included).")
@click.option("--students", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--partitions", default=8, show_default=True, type=click.IntRange(1),
              help="Partitions of the bench topics.")
@click.option("--rate", default=2000, show_default=True, type=click.IntRange(1),
              help="Offered rate of the latency stage (events/s).")
@click.option("--latency-seconds", default=20.0, show_default=True,
              type=click.FloatRange(1), help="Duration of the latency stage (seconds).")
@click.option("--batch", default=50, show_default=True, type=click.IntRange(2, 500),
              help="Events per record in the batched-records stages.")
@click.option("--local", is_flag=True,
              help="Run on a throwaway local stack instead of the configured servers (the "
                   "environment's other settings, e.g. XP_SINK_BATCH_SECONDS, still apply).")
@click.option("--output", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the figures to this file as JSON..")
@click.option("--json", "json_old", type=click.Path(dir_okay=False, path_type=Path),
              hidden=True)  # the old name of --output, for one release
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Record py-spy profiles (folded stacks) of each process here.")
@click.option("--skip", multiple=True,
              type=click.Choice(["baselines", "worker", "sink", "start", "scale", "recovery",
                                 "batched", "claims",
                                 "e2e"]),  # streams.lab.bench.STAGES (a test keeps them equal)
              help="Leave a stage out (repeatable); the limits always run.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 8),
              help="Fold worker processes in the worker and end-to-end stages.")
def bench(events: int, students: int, partitions: int, rate: int, latency_seconds: float,
          batch: int, local: bool, json_out: Path | None, json_old: Path | None,
          profile_dir: Path | None,
          skip: tuple[str, ...], workers: int) -> None:
    """Measure every stage against its limits in one run and print one table."""
    from rich.console import Console

    from streams.dev.procs import interrupt_on_sigterm
    from streams.lab.bench import (
        STAGES,
        Bench,
        Report,
        default_workdir,
        profile_summary,
        render,
        run_local,
    )
    from streams.lab.loadgen import LoadSpec

    setup_logging(default_level="WARNING")
    interrupt_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 150)
    workdir = default_workdir()
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    spec = LoadSpec(events=events, students=students)

    def run(settings: Settings) -> Report:
        settings = settings.with_(topic_partitions=partitions)
        return Bench(settings, spec, workdir, rate, latency_seconds, profile_dir,
                     STAGES - set(skip), batch, say=console.print, workers=workers).run()

    console.print(f"bench logs in {workdir}")
    try:
        settings = load_settings()
        report = run_local(run, settings) if local else run(settings)
    except KeyboardInterrupt:
        console.print(f"interrupted; logs kept in {workdir}")
        sys.exit(130)
    shutil.rmtree(workdir, ignore_errors=True)  # logs and table stores: kept only on failure
    console.print(render(report))
    for path in sorted(profile_dir.glob("*.folded")) if profile_dir is not None else []:
        console.print(f"profile {path} (share of the main thread's samples):")
        for share, frame in profile_summary(path):
            console.print(f"  {share:6.1%}  {frame}")
    write_report(report.to_json(), json_out or json_old)


def _faults(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    from streams.lab.chaos import DEFAULT_FAULTS, FAULTS

    if value is None:
        return DEFAULT_FAULTS
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in FAULTS]
    if unknown or not names:
        raise click.BadParameter(f"unknown fault {', '.join(unknown) or '(none given)'}; "
                                 f"known: {', '.join(FAULTS)}")
    return names


@lab.command()
@click.option("--events", default=500_000, show_default=True, type=click.IntRange(1000),
              help="Records of one workload (duplicates, conflicts, invalid ones included).")
@click.option("--students", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--partitions", default=8, show_default=True, type=click.IntRange(1),
              help="Partitions of the chaos topics.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 8),
              help="Fold worker processes in the group at the start.")
@click.option("--rate", default=3000, show_default=True, type=click.IntRange(1),
              help="Records published per second.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 500),
              help="Events per record (1: one event a record; more: batched records).")
@click.option("--seed", default=1, show_default=True, type=int,
              help="Seeds the workload and the fault schedule.")
@click.option("--faults", "faults", callback=_faults,
              help="Comma-separated faults to cycle through [default: all but broker-restart "
                   "and broker-kill].")
@click.option("--fault-interval", default=20.0, show_default=True, type=click.FloatRange(0.5),
              help="Seconds between faults (jittered +-25%).")
@click.option("--duration", type=Duration(),
              help="Soak: publish workloads one after another for this long (90s, 30m, 2h).")
@click.option("--outage-seconds", default=30.0, show_default=True, type=click.FloatRange(1),
              help="How long pg-outage keeps PostgreSQL down.")
@click.option("--storm-repeats", default=100, show_default=True, type=click.IntRange(1),
              help="How often duplicate-storm resends its 1,000 records.")
@click.option("--poison", default=2000, show_default=True, type=click.IntRange(10),
              help="Hostile records (streams lab hostile's XP cases) of one poison-burst.")
@click.option("--broker-restart-command",
              help="Shell command that restarts a durable broker (for the broker-restart fault).")
@click.option("--local", is_flag=True,
              help="Run on a throwaway local stack (needed for pg-outage and broker-restart; "
                   "the environment's other settings still apply).")
@click.option("--output", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report to this file as JSON..")
@click.option("--json", "json_old", type=click.Path(dir_okay=False, path_type=Path),
              hidden=True)  # the old name of --output, for one release
def chaos(events: int, students: int, partitions: int, workers: int, rate: int, batch: int,
          seed: int, faults: tuple[str, ...], fault_interval: float, duration: float | None,
          outage_seconds: float, storm_repeats: int, poison: int,
          broker_restart_command: str | None, local: bool, json_out: Path | None,
          json_old: Path | None) -> None:
    """Run a workload through the pipeline under faults and check the guarantees (exit 0: all
    hold; 1: a guarantee broke; 2: the broker lost acknowledged records, not checkable)."""
    from rich.console import Console

    from streams.dev.procs import interrupt_on_sigterm
    from streams.lab.chaos import Chaos, ChaosReport, render
    from streams.lab.loadgen import LoadSpec

    setup_logging(default_level="WARNING")
    quiet_clients()  # a broker fault would fill the report with the publisher's retries
    interrupt_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 150)
    workdir = Path(tempfile.mkdtemp(prefix="xp-chaos-"))
    spec = LoadSpec(events=events, students=students, seed=seed)

    def run(settings: Settings, stack: LocalStack | None) -> ChaosReport:
        return Chaos(settings.with_(topic_partitions=partitions), spec, workdir, faults,
                     fault_interval, workers, rate, duration, outage_seconds, storm_repeats,
                     poison, stack, batch, broker_restart_command, say=console.print).run()

    console.print(f"chaos logs in {workdir}")
    try:
        if local:
            stack = local_stack(partitions)
            try:
                report = run(stack.start(), stack)
            finally:
                stack.stop()
        else:
            report = run(load_settings(), None)
    except KeyboardInterrupt:
        console.print(f"interrupted; logs kept in {workdir}")
        sys.exit(130)
    console.print(render(report))
    write_report(report.to_json(), json_out or json_old)
    if report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        console.print(f"logs kept in {workdir}")
    sys.exit(0 if report.ok else 2 if report.broker_limit else 1)


@lab.command()
@click.option("--records", default=100_000, show_default=True, type=click.IntRange(100),
              help="Records of the campaign over the XP, action, claims and policies topics.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seeds the generators.")
@click.option("--partitions", default=4, show_default=True, type=click.IntRange(1),
              help="Partitions of the campaign's topics.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              type=click.FloatRange(10), help="Seconds every group has to reach lag 0 (a "
                                              "group still behind then is a stall).")
@click.option("--local", is_flag=True,
              help="Run on a throwaway local stack instead of the configured servers (the "
                   "environment's other settings, e.g. XP_WORKER_CHECKPOINT_RECORDS, still "
                   "apply).")
@click.option("--output", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report to this file as JSON..")
@click.option("--json", "json_old", type=click.Path(dir_okay=False, path_type=Path),
              hidden=True)  # the old name of --output, for one release
def hostile(records: int, seed: int, partitions: int, timeout_s: float, local: bool,
            json_out: Path | None, json_old: Path | None) -> None:
    """Send a seeded campaign of hostile input through every stream and check that each record
    was decided or dead-lettered with its reason (exit 0: all held; 1: a check failed)."""
    from rich.console import Console

    from streams.dev.procs import interrupt_on_sigterm
    from streams.lab.hostile import Campaign, Report, render

    setup_logging(default_level="WARNING")
    quiet_clients()
    interrupt_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 150)
    workdir = Path(tempfile.mkdtemp(prefix="xp-hostile-"))

    def run(settings: Settings) -> Report:
        return Campaign(settings.with_(topic_partitions=partitions), records, seed, workdir,
                        timeout_s, say=console.print).run()

    try:
        if local:
            stack = local_stack(partitions)
            try:
                report = run(stack.start())
            finally:
                stack.stop()
        else:
            report = run(load_settings())
    except KeyboardInterrupt:
        console.print(f"interrupted; logs kept in {workdir}")
        sys.exit(130)
    console.print(render(report))
    write_report(report.to_json(), json_out or json_old)
    for problem in report.problems:
        console.print(f"[red]FAILED[/] {problem}")
    for record in report.differing:
        console.print(f"  {record}")
    if report.ok:
        console.print("[green]every record decided or dead-lettered as expected[/]: 0 exits, "
                      "0 stalls, totals = SUM(ledger), nothing refused by PostgreSQL, the "
                      "changelog audit clean")
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        console.print(f"logs kept in {workdir}")
    sys.exit(0 if report.ok else 1)


for _name, _command in list(lab.commands.items()):  # the old names, for one release
    main.add_command(hidden_alias(_command, f"lab {_name}"), _name)
