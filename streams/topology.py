"""The pipeline as plain data (docs/design.md, "Data flow" and "Layout"): its stages (which
consumer group reads which topic) and its topics (partitions, configs).

The one list: the CLI builds each process for its stage (``streams.cli.pipeline`` wires the
writer and stream classes to the commands), ``kafka`` creates the topics from it, the Strimzi
topics of ``deploy/k8s`` are compared with it, and monitor, status, reconciliation, the grant
replay, the demo, the bench and chaos read their (group, topic) pairs from it.

Ground module: no I/O, and no class of a stream package named here, not even as a string
(``tests/contract/test_layout.py`` counts dotted names as imports).
"""

from __future__ import annotations

from dataclasses import dataclass

from streams import topics
from streams.settings import Settings


@dataclass(frozen=True)
class Stage:
    """One consumer of the pipeline: a sink (its own consumer group, a writer to PostgreSQL)
    or the fold worker reading one of its source topics (one stream per topic; the worker's
    group is shared)."""

    name: str
    """What operators call it (``ledger sink``, ``totals writer``, ``fold worker``)."""
    command: str
    """The ``streams`` command that runs it."""
    group: str
    """Its consumer group (committed offsets, lag)."""
    topic: str
    """The topic it reads."""
    sink: bool = True
    """True: a sink (writes what it reads to PostgreSQL); False: a stream of the fold worker."""


def stages(settings: Settings) -> tuple[Stage, ...]:
    """Every stage in data-flow order: each source topic's fold worker stream and sink, then
    the sinks of the worker's changelogs and outputs."""
    s = settings
    return (
        Stage("fold worker", "worker", s.worker_group, s.xp_topic, sink=False),
        Stage("ledger sink", "sink", s.ledger_group, s.xp_topic),
        Stage("totals writer", "totals-writer", s.totals_group, s.totals_changelog_topic),
        Stage("fold worker", "worker", s.worker_group, s.action_topic, sink=False),
        Stage("action ledger sink", "action-sink", s.action_ledger_group, s.action_topic),
        Stage("progress writer", "progress-writer", s.progress_group,
              s.progress_changelog_topic),
        Stage("fold worker", "worker", s.worker_group, s.claims_topic, sink=False),
        Stage("award sink", "award-sink", s.award_group, s.outcomes_topic),
        Stage("grant writer", "grant-writer", s.grant_group, s.grant_changelog_topic),
        Stage("rules sink", "rules-sink", s.rules_group, s.policies_topic),
    )


def group_topics(settings: Settings, topic: str | None = None) -> list[tuple[str, str]]:
    """The (consumer group, topic) pairs of every stage, or of the stages reading ``topic``."""
    return [(st.group, st.topic) for st in stages(settings) if topic in (None, st.topic)]


def readers(settings: Settings, topic: str) -> tuple[list[str], str]:
    """``([group, ...], topic)``: the consumer groups that read ``topic``, in data-flow order,
    in the shape :func:`streams.lag.wait_past` takes."""
    return [g for g, _ in group_topics(settings, topic)], topic


def stage(settings: Settings, command: str, topic: str) -> Stage:
    """The stage run by ``command`` that reads ``topic``.

    Raises:
        KeyError: no such stage.
    """
    for st in stages(settings):
        if st.command == command and st.topic == topic:
            return st
    raise KeyError((command, topic))


def sink(settings: Settings, command: str) -> Stage:
    """The sink stage run by ``command``.

    Raises:
        KeyError: no sink stage has that command.
    """
    for st in stages(settings):
        if st.command == command and st.sink:
            return st
    raise KeyError(command)


def sink_commands(settings: Settings) -> list[str]:
    """The commands of every sink stage, in data-flow order."""
    return [st.command for st in stages(settings) if st.sink]


def source_topics(settings: Settings) -> list[str]:
    """The topics the fold worker reads, one stream each, in data-flow order."""
    return [st.topic for st in stages(settings) if not st.sink]


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the pipeline as :func:`streams.kafka.create_missing` creates it (and as
    the Strimzi ``KafkaTopic`` resources of ``deploy/k8s`` declare it: a contract test
    compares them)."""

    name: str
    partitions: int
    configs: tuple[tuple[str, str], ...] = ()
    """Topic configs, e.g. ``(("cleanup.policy", "compact"),)``."""


COMPACT = (("cleanup.policy", "compact"),)

KEEP_FOREVER = (("retention.ms", "-1"),)
"""Claims and outcomes are kept for good: ``replay-grants`` and the changelog audit decide
every claim again from offset 0. With the broker's default (7 days) a segment whose records
carry old timestamps (a claim stamped a month ago rolls its segment at the next append) was
deleted within minutes, and the replay, missing a partition's first claims, reported
differences the worker had not made (found by the hostile-input campaign)."""


def changelog_specs(settings: Settings) -> list[TopicSpec]:
    """The worker's table changelogs: compacted, ``topic_partitions`` each."""
    return [TopicSpec(topics.changelog_topic(settings.worker_group, t),
                      settings.topic_partitions, COMPACT) for t in topics.WORKER_TABLES]


def grant_specs(settings: Settings) -> list[TopicSpec]:
    """The grant stream's topics: claims, their DLQ and the outcomes with ``topic_partitions``
    each (claims and XP events are co-partitioned by student), claims and outcomes kept for
    good (:data:`KEEP_FOREVER`), the policies with one partition, compacted (docs/design.md,
    "Grants")."""
    n = settings.topic_partitions
    return [TopicSpec(settings.claims_topic, n, KEEP_FOREVER),
            TopicSpec(settings.claims_dlq_topic, n),
            TopicSpec(settings.outcomes_topic, n, KEEP_FOREVER),
            TopicSpec(settings.policies_topic, 1, COMPACT)]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of the pipeline: the input topics (XP, action events) and their DLQs, the
    sinks' DLQ, the grant stream's topics, the worker's table changelogs."""
    inputs = (settings.xp_topic, settings.dlq_topic, settings.action_topic,
              settings.action_dlq_topic, settings.sink_dlq_topic)
    return ([TopicSpec(n, settings.topic_partitions) for n in inputs]
            + grant_specs(settings) + changelog_specs(settings))
