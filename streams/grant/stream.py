"""The grant stream of the fold worker: claims -> validate -> DLQ | decide -> award and outcome
(docs/design.md, "Grants").

It runs in the worker beside the XP and action streams, on the claims topic (key = student,
co-partitioned with the XP topic), with one table partitioned like it: ``xp_grant_state``,
student -> :class:`streams.grant.decide.GrantState` (its changelog feeds the grant writer).
Each claim is decided by the pure :func:`streams.grant.decide.decide` under the policies the
:class:`streams.policy_feed.PolicyFeed` has read to the topic's end; the award (an ordinary XP
event of kind ``daily_login``, to partition p of the XP topic) and the outcome (to partition p
of the outcomes topic) are output records of the checkpoint: acknowledged before the claim's
position is durable.

Crash safety is the other streams': the state remembers the position of the last record
applied and the outputs of its last claims, so a record read again after a crash re-emits the
same bytes (the award's id is its receipt; the XP stream's dedupe drops the copy). A second
table, ``claim_dedupe`` (claim id -> first :class:`streams.dedupe.Sighting`, kept for the dedupe
horizon), makes a claim id resent later than the state's last outputs a duplicate, dropped,
and one reused with other content a conflict: the first one stands.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any

from aiokafka.structs import ConsumerRecord

from streams import topics
from streams.dedupe import (
    Sighting,
    Verdict,
    classify_within,
    decode_sighting,
    encode_sighting,
)
from streams.errors import InvalidEvent
from streams.grant.decide import IN_FUTURE, TZ_CHANGE, GrantState, decide, decode_claim
from streams.metrics import Metrics
from streams.policy_feed import PolicyFeed
from streams.settings import Settings
from streams.worker.checkpoint import Checkpoint
from streams.worker.state import Expiry, TableState, new_table

log = logging.getLogger(__name__)


class GrantStream:
    """The claims topic's fold (:class:`streams.worker.reader.FoldStream`).

    Args:
        app: the worker's Faust app (its table is created here).
        settings: topics, limits, the policy feed's settings.
        metrics: ``xp_records_total{stage="grant"}``, ``xp_grant_claims_total``,
            ``xp_grant_tz_changes_total``, ``xp_grant_hints_total``.
    """

    stage = "grant"

    def __init__(self, app: Any, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topic = settings.claims_topic
        self.dlq_topic = settings.claims_dlq_topic
        self.state: TableState[GrantState] = TableState(
            new_table(app, settings, topics.GRANT_TABLE), GrantState.to_json,
            GrantState.from_json)
        self.seen: TableState[Sighting] = TableState(
            new_table(app, settings, topics.CLAIM_DEDUPE_TABLE), encode_sighting,
            decode_sighting)
        self.tables: list[TableState[Any]] = [self.state, self.seen]
        self.expiry = Expiry(self.seen, settings.dedupe_expire_slice)
        self.feed = PolicyFeed(settings, metrics)
        self.limits = settings.limits()

    async def fold(self, partition: int, records: list[ConsumerRecord[bytes, bytes]],
                   checkpoint: Checkpoint, now: float) -> int:
        """Decide ``records`` of ``partition`` in order, under every policy published before
        them; queue each award and outcome for the checkpoint. Returns how many were invalid."""
        await self.feed.catch_up()
        invalid = 0
        counts: Counter[str] = Counter()
        for record in records:
            try:
                claim = decode_claim(record.key, record.value, self.limits, record.timestamp,
                                     partition, record.offset, self.settings.topic_partitions)
            except InvalidEvent as exc:
                checkpoint.dead_letter(self.dlq_topic, record, exc)
                invalid += 1
                continue
            ahead_s = claim.timestamp_us / 1e6 - now
            if ahead_s > self.settings.claim_max_ahead_seconds:
                checkpoint.dead_letter(self.dlq_topic, record, InvalidEvent(
                    IN_FUTURE, f"record time {ahead_s:.0f} s ahead of the worker's clock"))
                invalid += 1
                continue
            key = claim.student_id.encode()
            state = self.state.get(partition, key) or GrantState()
            id_key = uuid.UUID(claim.id).bytes
            seen = self.seen.get(partition, id_key)
            verdict = classify_within(seen, claim.fingerprint, partition, record.offset,
                                      claim.timestamp_us / 1e6,
                                      self.settings.dedupe_horizon_seconds)
            if verdict is Verdict.CONFLICT or (verdict is Verdict.DUPLICATE and not any(
                    claim.id == recent for recent, _, _ in state.recent)):
                # a resend older than the last outputs kept in the state: decided once
                # already; a claim id reused with other content: the first one stands
                if verdict is Verdict.CONFLICT:
                    log.warning("conflict: claim %s at %s/%s differs from its first sighting; "
                                "the first one stands", claim.id, partition, record.offset,
                                extra={"offset": record.offset})
                counts[verdict.value] += 1
                continue
            if verdict is Verdict.NEW:
                self.seen.put(partition, id_key, Sighting(
                    claim.fingerprint, partition, record.offset, now,
                    claim.timestamp_us / 1e6))
            decision = decide(state, claim, self.feed.policies)
            self.state.put(partition, key, decision.state)
            if decision.award is not None:
                checkpoint.emit(self.settings.xp_topic, partition, key, decision.award)
            if decision.outcome:
                checkpoint.emit(self.settings.outcomes_topic, partition, key, decision.outcome)
            if not decision.redelivered and decision.fields:
                f = decision.fields
                self.metrics.grant_claims.labels(f["type"], f["outcome"],
                                                 f.get("reason") or "").inc()
                if f["type"] == TZ_CHANGE:
                    self.metrics.grant_tz_changes.labels(f["outcome"]).inc()
                for hint in f.get("hints") or ():
                    self.metrics.grant_hints.labels(hint).inc()
        dropped = counts["duplicate"] + counts["conflict"]
        self.metrics.records.labels(self.stage, "valid").inc(len(records) - invalid - dropped)
        self.metrics.records.labels(self.stage, "invalid").inc(invalid)
        for outcome, n in counts.items():
            self.metrics.records.labels(self.stage, outcome).inc(n)
        return invalid

    def housekeeping(self, partitions: set[int], checkpoint: Checkpoint, now: float) -> None:
        """Drop claim sightings past the dedupe horizon, one slice at a time (the state itself
        is bounded per student: docs/design.md, "Grants")."""
        dropped = self.expiry.run(partitions, now, self.settings.dedupe_horizon_seconds)
        if dropped:
            self.metrics.dedupe_expired.inc(dropped)

    async def close(self) -> None:
        """Stop the policy feed's consumer."""
        await self.feed.stop()
