"""Settings from the environment, and the load generator's determinism."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams import kafka
from streams.errors import ConfigError
from streams.lab.loadgen import LoadSpec, generate
from streams.settings import Settings, redact_url


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2", "XP_TOPIC_PARTITIONS": "3"})
    assert kafka.client_kwargs(s)["bootstrap_servers"] == ["a:1", "b:2"]
    assert s.topic_partitions == 3 and s.dlq_topic == "xp-events.dlq"
    assert s.totals_changelog_topic == "xp-streams-worker-xp_totals-changelog"


@pytest.mark.parametrize(("name", "value"), [
    ("XP_TOPIC_PARTITIONS", "zero"), ("XP_TOPIC_PARTITIONS", "0"),
    ("KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON"), ("XP_TABLE_STORE", "redis://"),
])
def test_bad_values_raise_config_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_child_processes_get_every_setting() -> None:
    """The local stack starts pipeline processes with ``to_env``: every setting reaches them
    (a missing one ran tests on the default silently), and reads back equal."""
    import dataclasses

    from streams.settings import to_env, variables

    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
                 kafka_sasl_username="u", kafka_sasl_password="p", kafka_ssl_cafile="ca",
                 kafka_ssl_certfile="c", kafka_ssl_keyfile="k", worker_standby_replicas=2,
                 sink_batch_bytes=12345, producer_linger_ms=7, worker_instance_id="w-1",
                 worker_failpoint="folded:3", faust_sensor=True, producer_idempotence=False)
    env = to_env(s)
    assert {v.name for v in variables()} == set(env)
    assert dataclasses.asdict(Settings.from_env(env)) == dataclasses.asdict(s)


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("Yes", True),
                                            ("ON", True), ("0", False), ("false", False),
                                            ("no", False), ("off", False)])
def test_booleans_read_every_usual_spelling(raw: str, value: bool) -> None:
    assert Settings.from_env({"XP_FAUST_SENSOR": raw}).faust_sensor is value


def test_a_boolean_that_is_none_is_refused() -> None:
    with pytest.raises(ConfigError, match="XP_FAUST_SENSOR='maybe' is not a boolean"):
        Settings.from_env({"XP_FAUST_SENSOR": "maybe"})


def test_an_unknown_xp_variable_is_named_with_the_likely_one(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({"XP_TOPIC_PARTITION": "3", "XP_LOCAL_BROKER": "kafka",
                                  "HOME": "/root"})
    assert settings.topic_partitions == Settings().topic_partitions
    assert [r.getMessage() for r in caplog.records] == [
        "XP_TOPIC_PARTITION is not a setting and is ignored (did you mean XP_TOPIC_PARTITIONS?)"]


def test_the_readme_lists_every_variable_as_declared() -> None:
    """README.md's settings table is :func:`streams.settings.settings_table`
    (``streams settings --markdown`` prints it)."""
    from pathlib import Path

    from streams.settings import settings_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    begin, end = "<!-- settings table: streams settings --markdown -->\n", "<!-- end -->"
    assert begin in readme
    table = readme[readme.index(begin) + len(begin):readme.index(end, readme.index(begin))]
    assert table == settings_table()


def test_passwords_are_redacted() -> None:
    s = Settings(database_url="postgresql://writer:s3cret@db:5432/xp", kafka_sasl_password="pw")
    assert "s3cret" not in str(s.describe()) and "pw'" not in str(s.describe())
    assert redact_url("postgresql://u:p@h/d") == "postgresql://u:***@h/d"
    assert "pw" not in repr(s)


def test_loadgen_is_deterministic_and_counts_add_up() -> None:
    spec = LoadSpec(events=3000, students=50, seed=7)
    records, expected = generate(spec)
    again, expected2 = generate(spec)
    assert records == again and expected == expected2
    assert len(records) == expected.records == 3000
    assert (expected.valid_unique + expected.duplicates + expected.conflicts
            + sum(expected.invalid.values())) == 3000
    assert set(expected.invalid) == {"bad_json", "schema", "negative_delta", "key_mismatch",
                                     "oversized"}
    assert sum(t[0] for t in expected.students.values()) != 0
    assert generate(LoadSpec(events=3000, students=50, seed=8))[0] != records


def test_bench_skip_choices_are_its_stages() -> None:
    """``streams bench --skip`` offers every stage the bench can leave out."""
    import click

    from streams.cli import main
    from streams.lab.bench import STAGES

    assert isinstance(main, click.Group)
    skip = next(p for p in main.commands["lab"].commands["bench"].params if p.name == "skip")
    assert isinstance(skip.type, click.Choice)
    assert set(skip.type.choices) == STAGES


def test_latency_windows_group_by_acknowledgement_time() -> None:
    """The latency stage's windows: events grouped by when they were acknowledged, each window
    with its own percentiles; a stage shorter than two windows has none."""
    from streams.lab.bench import LATENCY_WINDOW_S, Offered, latency_windows

    seen = Offered(started=100.0)
    # window 0: latencies 0.1 s; window 1: 0.5 s; window 2: one event of 2 s
    for i in range(10):
        seen.acks[i] = 100.0 + i
        seen.applied[i] = seen.acks[i] + 0.1
    for i in range(10, 20):
        seen.acks[i] = 100.0 + LATENCY_WINDOW_S + i
        seen.applied[i] = seen.acks[i] + 0.5
    seen.acks[20] = 100.0 + 2 * LATENCY_WINDOW_S + 1
    seen.applied[20] = seen.acks[20] + 2.0
    seen.acks[21] = 101.0  # never applied: not in any window
    windows = latency_windows(seen)
    assert [(w["start_s"], w["events"], w["p50"], w["max"]) for w in windows] == [
        (0.0, 10, 100.0, 100.0), (LATENCY_WINDOW_S, 10, 500.0, 500.0),
        (2 * LATENCY_WINDOW_S, 1, 2000.0, 2000.0)]
    short = Offered(started=0.0, acks={0: 1.0}, applied={0: 1.2})
    assert latency_windows(short) == []


def test_a_stage_without_a_figure_says_so() -> None:
    """A stage timed from its first commit whose first commit held the whole workload has no
    rate: no ratio to its limit (not 0%), and a note that says why."""
    from streams.lab.bench import BROKER_LIMIT, Report, Stage

    report = Report(spec={})
    report.stages.append(Stage(BROKER_LIMIT, 20_000, 0.1))
    timed = Stage("fold worker alone", 15_000, 0.5, BROKER_LIMIT, "first commit to lag 0")
    empty = Stage("ledger sink alone", 0, 0.0, BROKER_LIMIT, "first commit to lag 0")
    assert report.ratio(timed) == 30_000 / 200_000
    assert report.ratio(empty) is None

    from streams.lab import bench

    said: list[str] = []
    b = object.__new__(bench.Bench)
    b.report, b.say = report, said.append
    b.add(empty)
    assert "held the whole workload" in empty.note and said


def test_a_server_process_that_exited_keeps_its_cpu_in_its_parents_figure() -> None:
    """The bench's servers' CPU (streams.lab.bench.server_cpu_seconds) counts a child that has
    exited and been waited for in its parent: a PostgreSQL backend that closed between two
    readings took its CPU out of the difference, and the sink's rounds read ~0."""
    from streams.lab.bench import cpu_seconds

    before = cpu_seconds(os.getpid(), children=True)
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.5\n"
                    "while time.process_time() < end: pass"], check=True, timeout=60)
    assert cpu_seconds(os.getpid(), children=True) - before >= 0.4
    assert cpu_seconds(os.getpid()) < cpu_seconds(os.getpid(), children=True)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_finite_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="XP_SINK_BATCH_SECONDS=.* is not a finite number"):
        Settings.from_env({"XP_SINK_BATCH_SECONDS": raw})


def test_timed_steps_read_the_histograms_between_two_scrapes() -> None:
    """The latency stage's step figures (streams.lab.bench.histogram_delta, bucket_quantile)
    from two real /metrics texts: only what was observed in between counts, label sets add up,
    and quantiles interpolate inside their bucket the way Prometheus's histogram_quantile does."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    from streams.lab.bench import bucket_quantile, histogram_delta

    registry = CollectorRegistry()
    h = Histogram("xp_sink_batch_write_seconds", "", ["sink"], registry=registry,
                  buckets=(0.1, 0.5, 1.0))

    def scrape() -> list[Sample]:
        text = generate_latest(registry).decode()
        return [s for f in text_string_to_metric_families(text) for s in f.samples]

    h.labels("ledger").observe(5.0)  # before the first scrape: not counted
    before = scrape()
    for v in (0.05, 0.2, 0.3, 0.4):
        h.labels("ledger").observe(v)
    h.labels("totals").observe(0.7)
    count, total, buckets = histogram_delta(before, scrape(), "xp_sink_batch_write_seconds")
    assert count == 5 and round(total, 6) == 1.65
    assert buckets == {0.1: 1, 0.5: 4, 1.0: 5, float("inf"): 5}
    # rank 2.5 of 5: 1.5 of the 3 observations in (0.1, 0.5]
    assert bucket_quantile(buckets, count, 0.5) == 0.1 + 0.4 * 1.5 / 3
    assert bucket_quantile({0.1: 0, 1.0: 1, float("inf"): 3}, 3, 0.99) == 1.0


def test_the_worker_fetch_gathers_unless_its_wait_is_zero() -> None:
    """The worker's batch reader asks the broker to hold its fetch for XP_WORKER_FETCH_WAIT_MS
    or until 1 MiB is ready (streams.kafka.gathering_fetch); 0 answers at one record, with the
    idle wait every other consumer has."""
    from streams.kafka import GATHER_MIN_BYTES, gathering_fetch

    s = Settings.from_env({"XP_WORKER_FETCH_WAIT_MS": "80", "XP_FETCH_MAX_WAIT_MS": "300"})
    assert gathering_fetch(s) == {"fetch_max_wait_ms": 80, "fetch_min_bytes": GATHER_MIN_BYTES}
    off = Settings.from_env({"XP_WORKER_FETCH_WAIT_MS": "0", "XP_FETCH_MAX_WAIT_MS": "300"})
    assert gathering_fetch(off) == {"fetch_max_wait_ms": 300, "fetch_min_bytes": 1}
    with pytest.raises(ConfigError, match="XP_WORKER_FETCH_WAIT_MS"):
        Settings.from_env({"XP_WORKER_FETCH_WAIT_MS": "-1"})
