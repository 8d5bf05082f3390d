"""``streams replay-grants``: decide the whole claims topic again, from offset 0 and empty
state, with the pure rule the worker runs (:func:`streams.grant.decide.decide`), and compare
the outcomes and awards with ``xp_claim_outcomes`` and ``xp_awards`` (docs/design.md, "Grants").

Why a replay sees what the worker saw: every policy version had to be published before its
first reward day began anywhere (UTC+14), so the version a claim got is the one the whole topic
gives for its day; a season that contains a claim's time had started, and a started season is
immutable. The claims topic must therefore be kept whole (infinite retention).

Outcomes are compared byte for byte in their canonical form (sorted keys, as produced); awards
by receipt, with their amount, day, streak day and policy version. Run it at lag 0: the award
sink is waited for until it has passed the outcomes topic's end.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from streams import kafka, lag, topology
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.dedupe import Sighting, Verdict, classify_within
from streams.errors import BrokerUnavailable, InvalidEvent
from streams.grant.decide import IN_FUTURE, GrantState, decide, decode_claim
from streams.metrics import Metrics
from streams.policy_feed import PolicyFeed
from streams.settings import Settings


@dataclass
class GrantReplay:
    """What a replay of the claims topic found (``--json`` form: :func:`dataclasses.asdict`)."""

    records: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    """Invalid claims by DLQ reason (the worker dead-lettered them too)."""
    outcomes: int = 0
    awards: int = 0
    outcomes_missing: list[str] = field(default_factory=list)
    """Outcome ids the replay produced that PostgreSQL lacks."""
    outcomes_extra: list[str] = field(default_factory=list)
    """Outcome ids PostgreSQL holds that the replay did not produce."""
    outcomes_differing: list[str] = field(default_factory=list)
    awards_missing: list[str] = field(default_factory=list)
    awards_extra: list[str] = field(default_factory=list)
    awards_differing: list[str] = field(default_factory=list)
    caught_up: bool = True
    """False when the award sink did not pass the outcomes topic's end in time."""

    @property
    def identical(self) -> bool:
        """True when PostgreSQL holds exactly what the replay produced."""
        return not (self.outcomes_missing or self.outcomes_extra or self.outcomes_differing
                    or self.awards_missing or self.awards_extra or self.awards_differing)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "identical": self.identical}


def _award_key(award: dict[str, Any]) -> tuple[Any, ...]:
    m = award["metadata"]
    return (award["student_id"], m["reward_day_id"], award["delta"], m["streak_day"],
            m["policy_version"], m["grace_consumed"], m["season_id"], m["claim_id"])


@dataclass
class ClaimReplay:
    """The claims topic decided again from empty state (:func:`replay_claims`)."""

    records: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    """Invalid claims by DLQ reason."""
    states: dict[str, GrantState] = field(default_factory=dict)
    """Student id -> grant state after their last claim (the worker's ``xp_grant_state``)."""
    outcomes: dict[str, bytes] = field(default_factory=dict)
    """Outcome id -> outcome as produced (canonical JSON)."""
    awards: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Award id -> the compared fields of the award (:func:`_award_key`)."""
    sightings: dict[tuple[int, bytes], Sighting] = field(default_factory=dict)
    """(partition, claim id) -> the sighting the worker's ``claim_dedupe`` table keeps (or
    kept, before the horizon expired it); ``seen_at`` is 0 (not known to a replay)."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Claims dropped as ``duplicate`` (a resend) or ``conflict`` (an id reused)."""


async def refused_in_future(settings: Settings) -> set[tuple[int, int]]:
    """The (partition, offset) of every claim the worker dead-lettered as ``claim_in_future``,
    read from the claims DLQ's headers (a decision of the worker's clock that a replay cannot
    make again: :data:`streams.grant.decide.IN_FUTURE`).

    Raises:
        KafkaError: the brokers cannot be reached.
    """
    out: set[tuple[int, int]] = set()
    try:
        async for rec in kafka.read_to_end(settings, settings.claims_dlq_topic):
            headers = dict(rec.headers)
            if headers.get("reason") == IN_FUTURE.encode() and \
                    headers.get("source_topic") == settings.claims_topic.encode():
                out.add((int(headers["source_partition"]), int(headers["source_offset"])))
    except LookupError:  # no DLQ yet: nothing was refused
        pass
    return out


async def replay_claims(settings: Settings,
                        on_progress: Callable[[int, int], None] | None = None) -> ClaimReplay:
    """Decide every committed claim of the claims topic again, from offset 0 and empty state,
    under every published policy (module docstring says why that is what the worker saw),
    skipping the claims the worker refused as ahead of its clock (:func:`refused_in_future`).
    ``on_progress(read, total)`` is called after each fetched batch.

    Raises:
        KafkaError: the brokers cannot be reached.
        LookupError: the claims topic does not exist.
    """
    s = settings
    feed = PolicyFeed(s, Metrics())
    try:
        await feed.catch_up(connect_timeout_s=0)
    except TimeoutError as exc:
        raise BrokerUnavailable(str(exc)) from None
    finally:
        await feed.stop()
    out = ClaimReplay()
    partitions = s.topic_partitions
    refused = await refused_in_future(s)
    async for rec in kafka.read_to_end(s, s.claims_topic, on_progress):
        out.records += 1
        if (rec.partition, rec.offset) in refused:
            out.invalid[IN_FUTURE] += 1
            continue
        try:
            claim = decode_claim(rec.key, rec.value, s.limits(), rec.timestamp,
                                 rec.partition, rec.offset, partitions)
        except InvalidEvent as exc:
            out.invalid[exc.reason] += 1
            continue
        state = out.states.get(claim.student_id, GrantState())
        id_key = (rec.partition, uuid.UUID(claim.id).bytes)
        verdict = classify_within(out.sightings.get(id_key), claim.fingerprint, rec.partition,
                                  rec.offset, claim.timestamp_us / 1e6,
                                  s.dedupe_horizon_seconds)
        if verdict is Verdict.CONFLICT or (verdict is Verdict.DUPLICATE and not any(
                claim.id == recent for recent, _, _ in state.recent)):
            out.dropped[verdict.value] += 1  # as the worker's grant stream drops it
            continue
        if verdict is Verdict.NEW:
            out.sightings[id_key] = Sighting(claim.fingerprint, rec.partition, rec.offset, 0.0,
                                             claim.timestamp_us / 1e6)
        decision = decide(state, claim, feed.policies)
        out.states[claim.student_id] = decision.state
        if decision.outcome:
            out.outcomes[decision.fields["id"]] = decision.outcome
        if decision.award is not None:
            award = orjson.loads(decision.award)
            out.awards[award["id"]] = _award_key(award)
    return out


async def replay_grants(settings: Settings, wait_s: float = 60.0,
                        on_progress: Callable[[int, int], None] | None = None) -> GrantReplay:
    """Replay every claim and compare (module docstring). ``on_progress(read, total)`` is
    called after each fetched batch.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
        KafkaError: the brokers cannot be reached.
    """
    s = settings
    result = GrantReplay()
    result.caught_up = await lag.wait_past(s, [topology.readers(s, s.outcomes_topic)], wait_s)
    replay = await replay_claims(s, on_progress)
    result.records, result.invalid = replay.records, dict(replay.invalid)
    result.outcomes, result.awards = len(replay.outcomes), len(replay.awards)
    _compare(s, replay.outcomes, replay.awards, result)
    return result


def _compare(s: Settings, outcomes: dict[str, bytes], awards: dict[str, tuple[Any, ...]],
             result: GrantReplay) -> None:
    with connect(s.database_url) as conn, mapped_errors(s.database_url):
        stored = {str(i): orjson.dumps(body, option=orjson.OPT_SORT_KEYS) for i, body in
                  conn.execute(query("stored_outcomes"))}
        stored_awards = {
            str(r[0]): (str(r[1]), r[2].isoformat(), r[3], r[4], r[5], r[6], r[7], str(r[8]))
            for r in conn.execute(query("stored_awards"))}
    result.outcomes_missing = sorted(set(outcomes) - set(stored))
    result.outcomes_extra = sorted(set(stored) - set(outcomes))
    result.outcomes_differing = sorted(i for i in set(outcomes) & set(stored)
                                       if outcomes[i] != stored[i])
    result.awards_missing = sorted(set(awards) - set(stored_awards))
    result.awards_extra = sorted(set(stored_awards) - set(awards))
    result.awards_differing = sorted(i for i in set(awards) & set(stored_awards)
                                     if awards[i] != stored_awards[i])
