"""Every ``streams`` command, once with an unreachable broker and once with an unreachable
database: a command that needs the server exits non-zero with at most two lines naming what
could not be reached, never a traceback (docs/design.md, "Operations").

The commands are found by walking the click group, so a new command fails this test until it
is given its arguments here."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import click
import orjson
import pytest

from streams.cli import main
from streams.settings import Settings
from tests.integration.conftest import streams

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OWN_SERVERS = {"lab demo", "lab bench", "lab chaos", "dev up", "dev down"}
"""The harness's commands that start servers of their own (their failures are their stacks')."""

STUDENT = str(uuid.uuid4())
POLICY = {"kind": "policy", "policy_id": "daily_login", "version": 90,
          "effective_day": "2099-01-01",
          "definition": {"base_xp": 10, "streak_curve": {"type": "table", "steps": [
              {"from_day": 1, "pct": 100}]}}}


def arguments(tmp: Path, database_url: str) -> dict[str, tuple[list[str], set[str]]]:
    """Command -> (arguments, the servers it needs: ``broker``, ``db``)."""
    policy = tmp / "policy.json"
    policy.write_bytes(orjson.dumps(POLICY))
    events = tmp / "events.jsonl"
    events.write_bytes(orjson.dumps({"id": str(uuid.uuid4()), "student_id": STUDENT,
                                     "kind": "quiz", "delta": 5,
                                     "created_at": "2026-11-20T10:00:00Z"}) + b"\n")
    both = {"broker", "db"}
    pipeline = ([], {"broker"})  # waits out a database outage by design: only the broker
    return {
        "worker": pipeline, "sink": pipeline, "totals-writer": pipeline,
        "action-sink": pipeline, "progress-writer": pipeline, "award-sink": pipeline,
        "grant-writer": pipeline, "rules-sink": pipeline,
        "monitor": ([], {"broker"}),
        "audit-changelogs": ([], both),
        "backfill": (["--source-url", database_url, "--dry-run"], {"db"}),
        "backfill-vectors": ([], {"db"}),
        "claim": ([STUDENT, "--tz", "Europe/Stockholm"], {"broker"}),
        "compare-xp": (["--source-url", database_url], {"db"}),
        "create-topics": ([], {"broker"}),
        "lab hostile": (["--records", "100"], both),
        "lab loadgen": (["--events", "10", "--students", "2", "--expected",
                     str(tmp / "expected.json")], {"broker"}),
        "migrate": ([], {"db"}),
        "publish": ([str(events)], {"broker"}),
        "rebuild-totals": ([], {"db"}),
        "dlq list": ([], {"broker"}),
        "dlq show": ([], {"broker"}),
        "dlq replay": (["--dry-run"], {"broker"}),
        "offsets show": ([], both),
        "offsets reset": (["sink", "--to-earliest", "--dry-run"], both),
        "settings": ([], set()),  # reads the environment only
        "reconcile": ([], {"db"}),
        "replay": (["--since", "1h"], both),
        "replay-grants": ([], both),
        "status": ([], both),
        "verify": ([], {"db"}),
        "policy list": ([], {"broker"}),
        "policy publish": ([str(policy)], {"broker"}),
        "policy validate": ([str(policy)], {"broker"}),
    }


def commands() -> list[str]:
    """Every visible command path of ``streams`` (``policy list`` for a subcommand; the old
    names kept as hidden aliases are the same commands)."""
    out: list[str] = []

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in sorted(group.commands.items()):
            if command.hidden:
                continue
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
            else:
                out.append(f"{prefix}{name}")
    walk(main, "")
    return out


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("server", ["broker", "db"])
def test_every_command_says_in_one_line_what_it_cannot_reach(
        settings: Settings, tmp_path: Path, server: str) -> None:
    table = arguments(tmp_path, settings.database_url)
    missing = set(commands()) - OWN_SERVERS - set(table)
    assert not missing, f"commands without arguments in this test: {sorted(missing)}"
    port = closed_port()
    if server == "broker":
        env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    else:
        env = {"DATABASE_URL": f"postgresql://xp:secret@127.0.0.1:{port}/xp"}
    env |= {"XP_BROKER_WAIT_SECONDS": "0", "XP_METRICS_PORT": "0"}
    failures = []
    for command, (args, needs) in table.items():
        if server not in needs:
            continue
        done = streams([*command.split(), *args], settings, timeout_s=60, **env)
        lines = [line for line in (done.stdout + done.stderr).decode().splitlines()
                 if line.strip()]
        said = " ".join(lines)
        named = any(word in said.lower() for word in (
            ("kafka", "broker") if server == "broker" else ("postgres", "database")))
        if done.returncode == 0 or len(lines) > 2 or not named or "Traceback" in said:
            failures.append(f"{command} (exit {done.returncode}, {len(lines)} lines): "
                            f"{said[:300]}")
    assert failures == [], "\n".join(failures)


def test_a_metrics_port_in_use_and_a_missing_ca_file_are_one_line_each(
        settings: Settings, tmp_path: Path) -> None:
    """Two processes on one host with the default metrics port (before: a 46-line traceback),
    and a ``KAFKA_SSL_CAFILE`` that does not exist (before: ``FileNotFoundError`` without the
    file's name)."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - as the metrics server binds
        taken.listen()
        port = taken.getsockname()[1]
        done = streams(["sink"], settings, timeout_s=60, XP_METRICS_PORT=str(port))
    said = (done.stdout + done.stderr).decode().strip().splitlines()
    assert done.returncode != 0 and len(said) == 1, said
    assert f"port {port} (XP_METRICS_PORT)" in said[0]
    missing = tmp_path / "no-ca.pem"
    done = streams(["status"], settings, timeout_s=60, KAFKA_SECURITY_PROTOCOL="SSL",
                   KAFKA_SSL_CAFILE=str(missing))
    said = (done.stdout + done.stderr).decode().strip().splitlines()
    assert done.returncode != 0 and len(said) == 1, said
    assert f"KAFKA_SSL_CAFILE {missing}: no such file" in said[0]
