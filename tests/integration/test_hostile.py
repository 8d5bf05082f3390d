"""The CI-sized hostile-input campaign (docs/design.md, "Input hardening"): seeded hostile
records through every stream of the real pipeline; each record the broker accepted is decided
or dead-lettered with the reason the pipeline's validation gives it, no process exits, no
group stalls, totals = SUM(ledger), nothing refused by PostgreSQL, the changelog audit clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.lab.hostile import Campaign
from streams.settings import Settings
from tests.integration.conftest import streams

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ci_sized_hostile_campaign_decides_or_dead_letters_every_record(
        settings: Settings, tmp_path: Path) -> None:
    report = Campaign(settings.with_(topic_partitions=4), records=8000, seed=5,
                      workdir=tmp_path, timeout_s=300).run()
    assert report.problems == [], "\n".join(report.problems + report.differing)
    assert report.exits == [] and report.stalls == [] and report.differing == []
    assert report.mismatched_students == 0 and report.audit_differences == 0
    assert sum(report.published.values()) > 7500 and set(report.published) == {
        "xp", "actions", "claims", "policies"}
    seen = {(topic, reason) for topic, reason, got, _ in report.reasons if got}
    for must in [("xp", "bad_json"), ("xp", "schema"), ("xp", "key_mismatch"),
                 ("xp", "wrong_partition"), ("xp", "nul_character"), ("xp", "oversized"),
                 ("xp", "timestamp_out_of_range"), ("xp", "metadata_too_large"),
                 ("actions", "bad_json"), ("actions", "key_mismatch"),
                 ("claims", "unknown_time_zone"), ("claims", "claim_in_future"),
                 ("claims", "bad_timestamp"), ("policies", "applied"), ("policies", "policy")]:
        assert must in seen, f"the campaign produced no {must}: {sorted(seen)}"
    assert report.awards > 0 and report.ledger_rows[0] == report.ledger_rows[1] > 3000
    assert any("stamped in 9999" in case for case in report.refused_by_broker) or any(
        "stamped in 9999" in case for case in report.cases)


def test_hostile_refuses_bad_arguments_in_one_line(settings: Settings) -> None:
    done = streams(["lab", "hostile", "--records", "5"], settings)
    assert done.returncode == 2
    err = done.stderr.decode().strip().splitlines()
    assert len(err) <= 2 and "--records" in err[-1], err
