"""A real Prometheus (Debian's package) scrapes the pipeline with deploy/prometheus: lag rises
during a burst (published while the worker is stopped) and returns to 0; stopping the sink fires
an alert that resolves on restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.dev.procs import free_port, stop_process, wait_for_port
from streams.dev.stack import PipelineProcess
from streams.lab.loadgen import LoadSpec, generate
from streams.settings import Settings
from tests.integration.conftest import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
JOBS = {"worker": "xp-streams-worker", "totals-writer": "xp-streams-totals-writer",
        "sink": "xp-streams-ledger-sink", "monitor": "xp-streams-monitor"}


class PrometheusServer:
    """Prometheus with deploy/prometheus's scrape config and rules, pointed at this test's
    processes, scraping every second; every alert's ``for`` shortened to 3 s."""

    def __init__(self, tmp: Path, ports: dict[str, int]) -> None:
        self.tmp = tmp
        self.port = free_port()
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        # the XP pipeline's jobs (the action sink and progress writer are not run here)
        config["scrape_configs"] = [j for j in config["scrape_configs"]
                                    if j["job_name"] in JOBS.values()]
        assert len(config["scrape_configs"]) == len(JOBS)
        for job in config["scrape_configs"]:
            name = next(n for n, j in JOBS.items() if j == job["job_name"])
            job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[name]}"]}]
        rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
        for rule in (r for g in rules["groups"] for r in g["rules"]):
            if "for" in rule:
                rule["for"] = "3s"
        (tmp / "alerts.yml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = ["alerts.yml"]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.tmp / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={self.tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, 30, self.proc)
        # The port opens before the TSDB is ready: queries answer 503 until /-/ready says 200.
        poll(self.ready, 30, "Prometheus to be ready")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - local server
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except urllib.error.URLError:  # HTTPError 503 while starting is a URLError
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def api(self, path: str, **params: object) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local server
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def scalar(self, query: str) -> float | None:
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def firing(self, alert: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def poll(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def observed(settings: Settings, tmp_path: Path) -> Iterator[tuple[Pipeline, PrometheusServer]]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus missing: `make test` installs Debian's prometheus package")
    pipeline = Pipeline(settings, tmp_path)
    pipeline.procs["monitor"] = PipelineProcess(
        "monitor", settings, tmp_path / "monitor.log", free_port(),
        ("--interval", "1", "--reconcile-every", "2"))
    server = PrometheusServer(tmp_path, {n: p.metrics_port for n, p in pipeline.procs.items()})
    server.start()
    try:
        yield pipeline, server
    finally:
        pipeline.stop()
        server.stop()


def test_lag_rises_and_returns_to_zero_and_a_stopped_sink_fires_an_alert(observed) -> None:  # type: ignore[no-untyped-def]
    pipeline, prom = observed
    s = pipeline.settings
    pipeline.start()
    lag = f'sum by (group) (xp_consumer_lag_records{{topic="{s.xp_topic}"}})'
    poll(lambda: prom.scalar('count(up{job=~"xp-streams-.*"} == 1)') == 4, 60,
         "Prometheus to scrape all four processes")
    poll(lambda: prom.api("query", query=lag)["result"], 60, "the first lag samples")

    started = time.time()
    records, expected = generate(LoadSpec(events=20_000, students=500, seed=31,
                                          max_record_bytes=s.max_record_bytes))
    # The burst lands while the worker is stopped: a running worker folds 20,000 records in
    # under a second, faster than the monitor's 1 s lag sample and Prometheus's 1 s scrape
    # can be sure to see (CI once saw no sample above 1,000). Lag is read from the broker.
    pipeline.procs["worker"].stop()
    pipeline.publish(records)
    worker_lag = f'sum(xp_consumer_lag_records{{group="{s.worker_group}"}})'
    poll(lambda: (prom.scalar(worker_lag) or 0) > 1000, 60, "the worker's lag to rise")
    pipeline.start("worker")
    pipeline.wait_caught_up()
    total_lag = 'sum(xp_consumer_lag_records)'
    poll(lambda: prom.scalar(total_lag) == 0, 60, "Prometheus to see every lag back at 0")
    series = prom.api("query_range", query=lag, start=started - 2, end=time.time() + 1, step=1)
    for s_ in series["result"]:
        points = [(round(float(t) - started, 1), int(float(v))) for t, v in s_["values"]]
        print(f"lag series {s_['metric']['group']}: {points}")
        assert points[-1][1] == 0
    peaks = {s_["metric"]["group"]: max(int(float(v)) for _, v in s_["values"])
             for s_ in series["result"]}
    assert peaks[s.worker_group] > 1000
    pipeline.assert_exact(expected)
    poll(lambda: prom.scalar("max(xp_reconcile_mismatched_students)") == 0, 30,
         "a lag-0 reconciliation with 0 mismatches")

    pipeline.procs["sink"].stop()
    alert = poll(lambda: prom.firing("XpProcessDown"), 60, "XpProcessDown to fire")
    assert alert[0]["labels"]["job"] == "xp-streams-ledger-sink"
    print(f"fired: {alert[0]['labels']} at {alert[0]['activeAt']}")
    # lag is read from the broker: it is right while the sink is down
    more, _ = generate(LoadSpec(events=300, students=20, seed=32, invalid_ratio=0,
                                duplicate_ratio=0, conflict_ratio=0))
    pipeline.publish(more)
    sink_lag = f'sum(xp_consumer_lag_records{{group="{s.ledger_group}"}})'
    poll(lambda: prom.scalar(sink_lag) == 300, 30, "the stopped sink's lag to show 300")
    pipeline.start("sink")
    poll(lambda: not prom.firing("XpProcessDown"), 60, "XpProcessDown to resolve")
    poll(lambda: prom.scalar(sink_lag) == 0, 60, "the restarted sink's lag to return to 0")
