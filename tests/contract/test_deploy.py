"""deploy/ against the code: alert rules pass promtool's unit tests, and every metric the
dashboard and the alerts use is one the processes export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
import yaml
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry

from streams.metrics import Metrics, MonitorMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b((?:xp|faust|process)_[a-zA-Z0-9_]+)")


def exported_names() -> set[str]:
    """Every sample name the worker, sinks and monitor can expose (with _total, _bucket...)."""
    registries = [Metrics().registry, MonitorMetrics().registry, CollectorRegistry()]
    FaustMetrics.create(registries[-1], "faust")
    names: set[str] = set()
    for registry in registries:
        names |= set(registry._names_to_collectors)  # noqa: SLF001 - no public listing
        names |= {s.name for m in registry.collect() for s in m.samples}  # process_* too
    return names


def dashboard_exprs() -> list[str]:
    dash = orjson.loads((DEPLOY / "grafana" / "xp-streams.json").read_bytes())
    return [t["expr"] for panel in dash["panels"] for t in panel["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool missing: `make test` installs Debian's prometheus package")
    return path


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    for args in (["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool(), *args], cwd=DEPLOY / "prometheus",
                              capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_every_alert_has_summary_description_and_runbook_section() -> None:
    runbook = (DEPLOY.parent / "docs" / "runbook.md").read_text()
    anchors = {h.strip("# ").lower() for h in runbook.splitlines() if h.startswith("#### ")}
    tested = (DEPLOY / "prometheus" / "alerts_test.yml").read_text()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        assert notes["runbook_url"] == f"docs/runbook.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"no runbook section for {rule['alert']}"
        assert f"alertname: {rule['alert']}" in tested, f"no promtool test for {rule['alert']}"


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_expressions_name_only_exported_metrics(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert used, "no metric found in the expressions"
    missing = used - exported_names()
    assert not missing, f"{source} uses metrics no process exports: {sorted(missing)}"


def test_dashboard_covers_what_operators_watch() -> None:
    text = " ".join(dashboard_exprs())
    for needed in ("xp_consumer_lag_records", "xp_consumer_lag_seconds", "xp_records_total",
                   "xp_dlq_records_total", "xp_sink_batch_write_seconds_bucket",
                   "xp_newest_event_created_timestamp_seconds",
                   "xp_reconcile_mismatched_students"):
        assert needed in text, needed




def real_settings() -> set[str]:
    """Every environment variable declared in streams/settings.py (the settings and the
    others)."""
    from streams.settings import known_names

    return set(known_names())


def compose() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def streams_services() -> dict[str, dict[str, object]]:
    """The compose services that run the xp-streams image."""
    services: dict[str, dict[str, object]] = compose()["services"]  # type: ignore[assignment]
    return {n: s for n, s in services.items() if s.get("image", "").startswith("xp-streams:")}


def test_the_compose_file_is_valid_for_docker_compose(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose missing: `make test` installs Debian's docker-compose")
    env = {"PATH": "/usr/bin:/bin", "XP_OWNER_DB_PASSWORD": "o", "XP_PIPELINE_DB_PASSWORD": "p",
           "XP_GRAFANA_ADMIN_PASSWORD": "g"}
    done = subprocess.run([tool, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    unset = subprocess.run([tool, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                           capture_output=True, text=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin"}, check=False)
    assert unset.returncode != 0 and "XP_OWNER_DB_PASSWORD" in unset.stderr  # no default


def test_compose_runs_every_stage_with_real_commands_and_settings() -> None:
    from click import Group

    from streams import topology
    from streams.cli import main
    from streams.settings import Settings

    assert isinstance(main, Group)
    services = streams_services()
    commands = {s["command"][0] for s in services.values()}  # type: ignore[index]
    assert commands <= set(main.commands), commands - set(main.commands)
    stages = {st.command for st in topology.stages(Settings())}
    assert stages | {"monitor", "migrate", "create-topics"} == commands
    settings = real_settings()
    for name, service in services.items():
        env = set(service.get("environment", {}))  # type: ignore[arg-type]
        assert env <= settings, (name, env - settings)


def test_compose_prometheus_scrapes_every_pipeline_process_and_passes_promtool(
        tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {t.split(":")[0] for job in config["scrape_configs"]
               for sc in job["static_configs"] for t in sc["targets"]}
    long_running = {n for n, s in streams_services().items()
                    if s["command"][0] not in ("migrate", "create-topics")}  # type: ignore[index]
    assert targets == long_running
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")  # as mounted
    done = subprocess.run([promtool(), "check", "config", "prometheus.yml"], cwd=tmp_path,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_compose_rotates_every_log_and_runs_the_tested_kafka() -> None:
    """Docker's default json-file log grows for ever on a long-running host; the broker is the
    version every test runs (Apache Kafka from streams.dev.kafka_cluster)."""
    from streams.dev.kafka_cluster import KAFKA_VERSION

    services: dict[str, dict[str, object]] = compose()["services"]  # type: ignore[assignment]
    for name, service in services.items():
        options = yaml.safe_load(yaml.safe_dump(service.get("logging", {}))).get("options", {})
        assert options.get("max-size"), name
        assert int(options.get("max-file", "1")) >= 2, name
    assert services["kafka"]["image"] == f"docker.io/apache/kafka:{KAFKA_VERSION}"


def test_the_image_user_and_group_are_the_manifests() -> None:
    """The Containerfile's user and group ids are the ``runAsUser`` and ``runAsGroup`` of
    every pod of deploy/k8s (a group id the image does not know leaves the volume's files
    owned by a group the process is not in)."""
    text = (DEPLOY / "Containerfile").read_text()
    gid = re.search(r"groupadd [^\n]*--gid (\d+)", text)
    uid = re.search(r"useradd [^\n]*--uid (\d+) --gid (\d+)", text)
    assert gid and uid and gid.group(1) == uid.group(2), "user and group created with ids"
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user and (user.group(1), user.group(2)) == (uid.group(1), gid.group(1))
    ids = set()
    for path in (DEPLOY / "k8s" / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "template" in doc.get("spec", {}):
                ctx = doc["spec"]["template"]["spec"].get("securityContext", {})
                if "runAsUser" in ctx:
                    ids.add((str(ctx["runAsUser"]), str(ctx.get("runAsGroup"))))
    assert ids == {(uid.group(1), gid.group(1))}, ids
