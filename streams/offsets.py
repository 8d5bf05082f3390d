"""Offsets for operators (``streams offsets``; docs/runbook.md, "Replaying"): every stage's
committed offsets beside the sinks' offsets stored in PostgreSQL and the worker's positions,
per partition (:func:`offsets_table`), and a sink's stored offsets moved (:func:`plan_reset`,
:func:`apply_reset`) while its group has no live member.

A sink resumes from the offsets stored in PostgreSQL with its rows (the Kafka commit after
them only feeds lag); the worker from the positions its checkpoints write with its changelogs
(the same transaction commits them to its group). A reset therefore moves a sink's stored
offsets and its Kafka commit together; the worker's positions are not reset here (its tables
reflect every record it read: a rewind would count them again).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streams import kafka, topics, topology
from streams.audit.changelogs import recover_changelog
from streams.db.connect import connect, mapped_errors
from streams.db.queries import query
from streams.errors import StreamsError
from streams.settings import Settings


@dataclass(frozen=True)
class OffsetRow:
    """One partition of one stage."""

    stage: str
    group: str
    topic: str
    partition: int
    log_start: int
    """The earliest offset the broker still holds."""
    end: int
    """The last stable offset (what a read-committed reader can reach)."""
    committed: int | None
    """The group's committed offset in Kafka (None: none)."""
    stored: int | None
    """A sink's next offset in PostgreSQL, or the worker's position (its positions table)."""

    @property
    def lag(self) -> int | None:
        """Records behind, from what the stage resumes from (stored, else committed)."""
        at = self.stored if self.stored is not None else self.committed
        return None if at is None else max(0, self.end - at)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lag": self.lag}


async def offsets_table(settings: Settings) -> list[OffsetRow]:
    """Every stage of the topology, partition by partition, in data-flow order.

    Raises:
        KafkaError: the brokers cannot be reached.
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    s = settings
    with connect(s.database_url) as conn, mapped_errors(s.database_url):
        stored = {(g, t, p): o for g, t, p, o in conn.execute(query("all_offsets"))}
    positions, _ = await recover_changelog(
        s, topics.changelog_topic(s.worker_group, topics.POSITIONS_TABLE))
    worker_positions = {k.decode(): topics.decode_position(v) for (_, k), v in positions.items()}
    rows: list[OffsetRow] = []
    async with kafka.OffsetReader(s) as reader:
        for st in topology.stages(s):
            ends = await reader.high_watermarks(st.topic)
            starts = await reader.log_starts(st.topic)
            committed = await reader.committed(st.group, st.topic)
            for p in sorted(ends):
                mine = (stored.get((st.group, st.topic, p)) if st.sink else
                        worker_positions.get(topics.position_key(st.topic, p).decode()))
                rows.append(OffsetRow(st.name, st.group, st.topic, p, starts.get(p, 0),
                                      ends[p], committed.get(p), mine))
    return rows


async def live_members(settings: Settings, group: str) -> int:
    """How many members ``group`` has now (0: empty or unknown to the broker)."""
    async def describe(admin: AIOKafkaAdminClient) -> int:
        (response,) = await admin.describe_consumer_groups([group])
        (described,) = response.to_object()["groups"]
        return len(described["members"])

    return await kafka.with_admin(settings, describe)


@dataclass(frozen=True)
class ResetPlan:
    """A sink's stored offsets before and after a reset, per partition."""

    stage: topology.Stage
    before: dict[int, int | None]
    after: dict[int, int]


async def plan_reset(settings: Settings, command: str, to: str, value: float | int | None,
                     partitions: list[int] | None = None) -> ResetPlan:
    """Where ``reset`` would move the stored offsets of the sink run by ``command``: ``to`` is
    ``earliest`` (each partition's log start), ``latest`` (its end), ``time`` (the first record
    at or after ``value``, seconds since the epoch; its end when none) or ``offset``
    (``value``, within the log). ``partitions``: these only (default every one).

    Raises:
        StreamsError: not a sink's command, a partition the topic lacks, or the sink's group
            has live members (stop the sink first: it would overwrite the reset).
        KafkaError: the brokers cannot be reached.
    """
    try:
        stage = topology.sink(settings, command)
    except KeyError:
        raise StreamsError(f"{command} is not a sink; sinks: "
                           f"{', '.join(topology.sink_commands(settings))}") from None
    members = await live_members(settings, stage.group)
    if members:
        raise StreamsError(f"{stage.group} has {members} live member(s): stop the "
                           f"{stage.name} first (it would overwrite the reset)")
    current = {r.partition: r.stored for r in await offsets_table(settings)
               if r.group == stage.group and r.topic == stage.topic}
    chosen = sorted(current) if partitions is None else partitions
    if missing := set(chosen) - set(current):
        raise StreamsError(f"{stage.topic} has no partition {sorted(missing)}")
    async with kafka.OffsetReader(settings) as reader:
        starts = await reader.log_starts(stage.topic)
        ends = await reader.high_watermarks(stage.topic)
        after: dict[int, int] = {}
        for p in chosen:
            if to == "earliest":
                after[p] = starts[p]
            elif to == "latest":
                after[p] = ends[p]
            elif to == "offset":
                after[p] = min(max(int(value or 0), starts[p]), ends[p])
            else:
                after[p] = await _offset_at(settings, stage.topic, p, float(value or 0),
                                            ends[p])
    return ResetPlan(stage, {p: current[p] for p in chosen}, after)


async def _offset_at(settings: Settings, topic: str, partition: int, at_s: float,
                     end: int) -> int:
    """The offset of the first record at or after ``at_s`` (seconds since the epoch), or
    ``end`` when there is none."""
    client = kafka.consumer(settings, None)
    await kafka.start(client)
    try:
        tp = TopicPartition(topic, partition)
        found = await client.offsets_for_times({tp: int(at_s * 1000)})
        hit = found.get(tp)
        return end if hit is None else int(hit.offset)
    finally:
        await client.stop()


async def apply_reset(settings: Settings, plan: ResetPlan) -> None:
    """Write ``plan``: the sink's stored offsets in PostgreSQL (one transaction; a reset may
    move them back, which the sink's own writes never do) and its group's Kafka commit, so lag
    says the same. Checks again that the group has no live member.

    Raises:
        StreamsError: the group has live members now.
        KafkaError, DatabaseUnavailable: a server cannot be reached.
    """
    st = plan.stage
    if await live_members(settings, st.group):
        raise StreamsError(f"{st.group} has live members: stop the {st.name} first")
    url = settings.database_url
    with connect(url) as conn, mapped_errors(url), conn.transaction():
        conn.execute(query("reset_offsets"), {
            "group": st.group, "topic": st.topic, "partitions": list(plan.after),
            "offsets": list(plan.after.values())})
    client = kafka.consumer(settings, st.group)
    await kafka.start(client)
    try:
        tps = {TopicPartition(st.topic, p): OffsetAndMetadata(o, "")
               for p, o in plan.after.items()}
        client.assign(list(tps))
        await client.commit(tps)
    finally:
        await client.stop()
