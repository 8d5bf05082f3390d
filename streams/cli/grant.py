"""Grants: ``streams policy validate|publish|list`` for operators, ``streams claim`` for
scripts (docs/design.md, "Grants: policies")."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import click

from streams.cli.base import load_settings, main, quiet_clients


@main.group()
def policy() -> None:
    """Grant policy versions and the season calendar on the policies topic."""


def _read_record(source: click.utils.LazyFile) -> dict[str, Any]:
    import orjson

    try:
        value = orjson.loads(source.read())
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{source.name}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise click.ClickException(f"{source.name}: not a JSON object")
    return value


async def _known() -> Any:
    """The policies as the grant stream sees them now (the topic read to its end)."""
    from streams.metrics import Metrics
    from streams.policy_feed import PolicyFeed

    feed = PolicyFeed(load_settings(), Metrics())
    try:
        await feed.catch_up(connect_timeout_s=0)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await feed.stop()
    return feed.policies


def _check(record: dict[str, Any], policies: Any, at: datetime) -> None:
    from streams.policy_feed import refusal

    reason = refusal(record, at, load_settings().policy_min_lead_seconds, policies)
    if reason is not None:
        raise click.ClickException(f"refused: {reason}")


def _preview(record: dict[str, Any]) -> None:
    """A table of XP for streak days 1-30, one column per (season, segment) combination and
    window that can apply (none included)."""
    from rich.console import Console
    from rich.table import Table

    from streams.policies import PolicyVersion

    version = PolicyVersion.from_record(record)
    combos = version.combinations()
    table = Table(title=f"{version.policy_id} v{version.version} from {version.effective_day}:"
                        " XP by streak day")
    table.add_column("streak day", justify="right")
    columns = []
    for season, segment in combos:
        definition = version.effective(season, segment)
        for window, reward_day in definition.window_days(version.effective_day).items():
            columns.append((definition, reward_day))
            table.add_column(f"{season or 'any season'} / {segment or 'any segment'} / "
                             f"{'no window' if window is None else f'window {window}'}",
                             justify="right")
    for day in range(1, 31):
        table.add_row(str(day), *(str(d.amount(day, reward_day)) for d, reward_day in columns))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@policy.command("validate")
@click.argument("source", type=click.File("rb"))
@click.option("--offline", is_flag=True,
              help="Check the schema and the rules only, without reading the policies topic "
                   "(no check against published versions).")
def policy_validate(source: click.utils.LazyFile, offline: bool) -> None:
    """Check a policy or season-calendar file (SOURCE, or - for standard input) as publishing
    would now: schema, every merged season x segment combination, the publish deadline, the
    versions already published; print the XP of streak days 1-30. Exit 1 with one line when
    it would be refused."""
    from streams.policies import Policies

    record = _read_record(source)
    quiet_clients()
    policies = Policies() if offline else asyncio.run(_known())
    _check(record, policies, datetime.now(UTC))
    if record.get("kind") == "policy":
        _preview(record)
    click.echo(f"{source.name}: valid")


@policy.command("publish")
@click.argument("source", type=click.File("rb"))
def policy_publish(source: click.utils.LazyFile) -> None:
    """Validate SOURCE as ``policy validate`` does, then publish it to the policies topic
    (key ``{policy_id}:{version}``). A published version is immutable: publish a new version
    number instead of editing one."""
    import orjson

    from streams import kafka

    record = _read_record(source)
    quiet_clients()
    settings = load_settings()
    _check(record, asyncio.run(_known()), datetime.now(UTC))

    async def send() -> None:
        await kafka.grant_topics(settings)
        producer = kafka.producer(settings)
        await kafka.start(producer)
        try:
            key = f"{record['policy_id']}:{record['version']}".encode()
            await producer.send_and_wait(settings.policies_topic, orjson.dumps(record), key=key)
        finally:
            await producer.stop()

    asyncio.run(send())
    click.echo(f"published {record['policy_id']} v{record['version']} to "
               f"{settings.policies_topic}")


@policy.command("list")
def policy_list() -> None:
    """List the published policy versions and the season calendar."""
    from rich.console import Console
    from rich.table import Table

    quiet_clients()
    policies = asyncio.run(_known())
    table = Table(title="policy versions (a reward day uses the newest effective_day <= it)")
    for column in ("policy", "version", "effective_day", "base_xp"):
        table.add_column(column)
    for policy_id, versions in sorted(policies.versions.items()):
        for v in versions:
            table.add_row(policy_id, str(v.version), v.effective_day.isoformat(),
                          str(v.definition["base_xp"]))
    seasons = Table(title=f"season calendar v{policies.calendar.version}")
    for column in ("season", "starts_at", "ends_at"):
        seasons.add_column(column)
    for s in policies.calendar.seasons:
        seasons.add_row(s.season_id, s.starts_at.isoformat(), s.ends_at.isoformat())
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(seasons)


@main.command()
@click.argument("student_id")
@click.option("--tz", "client_tz", help="The client's IANA zone (a daily-login claim).")
@click.option("--change-tz", "reward_tz", help="Request this reward zone instead of claiming.")
@click.option("--requested-by", type=click.Choice(["learner", "parent", "support"]),
              default="learner", show_default=True, help="Who asks for --change-tz.")
@click.option("--segment", help="The learner segment (policy overrides).")
@click.option("--id", "claim_id", help="The claim's idempotency key (default: a new UUID).")
def claim(student_id: str, client_tz: str | None, reward_tz: str | None, requested_by: str,
          segment: str | None, claim_id: str | None) -> None:
    """Publish a daily-login claim (--tz) or a reward-zone change (--change-tz) for
    STUDENT_ID; print its id. The outcome arrives on the outcomes topic."""
    from streams.publish import Publisher

    if (client_tz is None) == (reward_tz is None):
        raise click.UsageError("give exactly one of --tz and --change-tz")
    quiet_clients()

    async def send() -> str:
        async with Publisher(load_settings(), kind="claim") as pub:
            if reward_tz is not None:
                return await pub.change_reward_tz(student_id, reward_tz, requested_by)
            assert client_tz is not None
            return await pub.claim(student_id, client_tz, claim_id=claim_id, segment=segment)

    click.echo(asyncio.run(send()))
