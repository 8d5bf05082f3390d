"""``streams offsets`` on the real stack: show puts each stage's Kafka commit beside what it
resumes from; reset refuses while the sink runs, moves a stopped sink's stored offsets and its
commit, and the restarted sink re-reads without writing anything twice."""

from __future__ import annotations

import orjson
import pytest

from streams.lab.loadgen import LoadSpec, generate
from tests.integration.conftest import Pipeline, query_one, streams

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rows_of(pipeline: Pipeline, group: str) -> list[dict[str, object]]:
    shown = streams(["offsets", "show", "--json"], pipeline.settings)
    assert shown.returncode == 0, shown.stderr
    return [r for r in orjson.loads(shown.stdout) if r["group"] == group]


def test_show_and_reset_a_sinks_offsets(pipeline: Pipeline) -> None:
    s = pipeline.settings
    records, expected = generate(LoadSpec(events=2000, students=40, seed=61,
                                          max_record_bytes=s.max_record_bytes))
    pipeline.start()
    pipeline.publish(records)
    pipeline.wait_caught_up()
    ledger = rows_of(pipeline, s.ledger_group)
    assert ledger and all(r["stored"] == r["end"] == r["committed"] and r["lag"] == 0
                          for r in ledger), ledger
    worker = [r for r in rows_of(pipeline, s.worker_group) if r["topic"] == s.xp_topic]
    assert worker and all(r["stored"] == r["committed"] for r in worker), worker

    refused = streams(["offsets", "reset", "sink", "--to-earliest"], s)
    assert refused.returncode == 1 and b"live member" in refused.stderr, refused
    assert pipeline.procs["sink"].stop() == 0
    dry = streams(["offsets", "reset", "sink", "--to-earliest", "--dry-run"], s)
    assert dry.returncode == 0 and b"dry run" in dry.stdout, dry
    assert all(r["stored"] == r["end"] for r in rows_of(pipeline, s.ledger_group))
    done = streams(["offsets", "reset", "sink", "--to-earliest", "--partition", "0"], s)
    assert done.returncode == 0, done
    after = {r["partition"]: r for r in rows_of(pipeline, s.ledger_group)}
    assert after[0]["stored"] == after[0]["committed"] == after[0]["log_start"] == 0
    assert after[0]["lag"] == after[0]["end"] > 0
    assert all(r["stored"] == r["end"] for p, r in after.items() if p != 0)

    rows_before = query_one(s.database_url, "SELECT count(*) FROM xp_events")[0]
    pipeline.start("sink")
    pipeline.wait_caught_up()
    assert query_one(s.database_url, "SELECT count(*) FROM xp_events")[0] == rows_before
    pipeline.assert_exact(expected)
    bad = streams(["offsets", "reset", "worker", "--to-earliest"], s)
    assert bad.returncode == 1 and b"not a sink" in bad.stderr
