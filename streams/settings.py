"""Settings: one frozen object, the only reader of the environment (README, Settings).

Every setting has an environment variable and a default that runs the local stack; README.md
lists them. Durations are in seconds unless the name ends in ``_ms``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from streams import topics
from streams.errors import ConfigError

if TYPE_CHECKING:
    from streams.events import Limits

N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, minimum: N, parse: type[N],
            maximum: N | None = None) -> N:
    """Read ``name`` as ``parse`` (int or float), at least ``minimum`` and at most ``maximum``
    (None: unbounded); absent -> ``default``."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        kind = "a whole number" if parse is int else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below its minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} is above its maximum {maximum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return _number(env, name, default, minimum, int)


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0,
           maximum: float | None = None) -> float:
    return _number(env, name, default, minimum, float, maximum)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


FAILPOINT_PATTERN = (r"(folded|produced|positioned):[1-9][0-9]*(:([0-9.]+|stop))?"
                     r"(,(folded|produced|positioned):[1-9][0-9]*(:([0-9.]+|stop))?)*")
"""The form of ``XP_WORKER_FAILPOINT`` (:class:`streams.worker.checkpoint.Failpoint`)."""

@dataclass(frozen=True)
class Settings:
    """All configuration of every XP Streams process.

    Read once with :meth:`from_env`; tests build one directly or with :meth:`with_`.
    """

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """KAFKA_BOOTSTRAP_SERVERS: comma-separated host:port list of the Kafka-protocol brokers."""
    kafka_security_protocol: str = "PLAINTEXT"
    """KAFKA_SECURITY_PROTOCOL: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    kafka_sasl_mechanism: str | None = None
    """KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol)."""
    kafka_sasl_username: str | None = None
    """KAFKA_SASL_USERNAME."""
    kafka_sasl_password: str | None = field(default=None, repr=False)
    """KAFKA_SASL_PASSWORD (never logged)."""
    kafka_ssl_cafile: str | None = None
    """KAFKA_SSL_CAFILE: CA bundle (PEM) that signed the brokers' certificates (None: the
    system's CAs)."""
    kafka_ssl_certfile: str | None = None
    """KAFKA_SSL_CERTFILE: this client's certificate (PEM) for brokers that require mutual TLS."""
    kafka_ssl_keyfile: str | None = None
    """KAFKA_SSL_KEYFILE: the private key (PEM) of KAFKA_SSL_CERTFILE."""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/xp_streams"
    """DATABASE_URL: libpq URL of the PostgreSQL database holding the ledger and totals."""
    xp_topic: str = topics.XP_EVENTS
    """XP_TOPIC: input topic of XP events (its DLQ is ``<topic>.dlq``)."""
    topic_partitions: int = 12
    """XP_TOPIC_PARTITIONS: partitions of the input topic when this project creates it."""
    worker_group: str = topics.WORKER_GROUP
    """XP_WORKER_GROUP: consumer group and Faust app id of the dedupe/fold worker."""
    ledger_group: str = topics.LEDGER_GROUP
    """XP_LEDGER_GROUP: consumer group of the ledger sink."""
    totals_group: str = topics.TOTALS_WRITER_GROUP
    """XP_TOTALS_GROUP: consumer group of the totals writer."""
    action_topic: str = topics.ACTION_EVENTS
    """XP_ACTION_TOPIC: input topic of action events, key = profile_id (DLQ ``<topic>.dlq``)."""
    action_ledger_group: str = topics.ACTION_LEDGER_GROUP
    """XP_ACTION_LEDGER_GROUP: consumer group of the action ledger sink."""
    progress_group: str = topics.PROGRESS_WRITER_GROUP
    """XP_PROGRESS_GROUP: consumer group of the vector progress writer."""
    claims_topic: str = topics.CLAIMS
    """XP_CLAIMS_TOPIC: input topic of daily-login claims and reward-zone changes, key =
    student_id, as many partitions as the XP topic (DLQ ``<topic>.dlq``)."""
    policies_topic: str = topics.POLICIES
    """XP_POLICIES_TOPIC: grant policy versions and the season calendar (one partition,
    compacted)."""
    outcomes_topic: str = topics.CLAIM_OUTCOMES
    """XP_OUTCOMES_TOPIC: the grant stream's outcome of each claim, key = student_id."""
    sink_dlq_topic: str = topics.SINK_DLQ
    """XP_SINK_DLQ_TOPIC: where every sink sends a record whose row PostgreSQL refuses (a
    CHECK, a length, an encoding, a foreign key), with the database's message in headers
    (docs/design.md, "Sinks: refused rows")."""
    policy_min_lead_seconds: float = 3600.0
    """XP_POLICY_MIN_LEAD_SECONDS: a policy version must be published this long before the
    start of its effective_day at UTC+14 (seconds); a later one is refused."""
    award_group: str = topics.AWARD_SINK_GROUP
    """XP_AWARD_GROUP: consumer group of the award sink."""
    grant_group: str = topics.GRANT_WRITER_GROUP
    """XP_GRANT_GROUP: consumer group of the grant writer (streaks and reward zones)."""
    rules_group: str = topics.RULES_SINK_GROUP
    """XP_RULES_GROUP: consumer group of the rules sink (policy versions and seasons)."""
    topic_replication_factor: int = 1
    """XP_TOPIC_REPLICATION_FACTOR: replicas of each topic the pipeline creates (its topics, the
    DLQs and the worker's changelogs); 3 on a production cluster."""
    sink_batch_records: int = 20_000
    """XP_SINK_BATCH_RECORDS: a sink batch is written once it holds this many records."""
    sink_batch_bytes: int = 8 * 1024 * 1024
    """XP_SINK_BATCH_BYTES: ... or this many bytes of record values."""
    sink_batch_seconds: float = 0.2
    """XP_SINK_BATCH_SECONDS: ... or when its oldest record has waited this long (seconds)."""
    db_retry_max_seconds: float = 30.0
    """XP_DB_RETRY_MAX_SECONDS: ceiling of the exponential backoff between database retries."""
    broker_wait_seconds: float = 120.0
    """XP_BROKER_WAIT_SECONDS: how long the worker and the sinks wait at start-up for a broker
    to answer (seconds), retrying with backoff and logging each failure; then they exit 1
    with one line. A refused login or an untrusted certificate fails at once. 0: no wait."""
    dedupe_horizon_seconds: float = 7 * 24 * 3600.0
    """XP_DEDUPE_HORIZON_SECONDS: how long an event id stays in the worker's dedupe table.

    An id older than this is checked against the ledger instead (docs/design.md, guarantee 8)."""
    claim_max_ahead_seconds: float = 300.0
    """XP_CLAIM_MAX_AHEAD_SECONDS: a claim whose record time is more than this ahead of the
    worker's clock goes to the claims DLQ as ``claim_in_future`` instead of being decided, so
    a producer with a bad clock never moves a learner's reward day ahead (seconds;
    docs/design.md, "Grants")."""
    dedupe_expire_interval_seconds: float = 1.0
    """XP_DEDUPE_EXPIRE_INTERVAL_SECONDS: how often the worker reads one slice of its dedupe
    table to drop entries past the horizon (seconds)."""
    dedupe_expire_slice: int = 10_000
    """XP_DEDUPE_EXPIRE_SLICE: dedupe entries read per expiry slice, shared by the held
    partitions (a slice of 10,000 costs about 13 ms of the worker's event loop). Slice /
    interval is the scan rate (entries/s); keep it above the average event rate, or entries
    outlive the horizon (never wrong, only a larger table)."""
    max_record_bytes: int = 64 * 1024
    """XP_MAX_RECORD_BYTES: a record value larger than this goes to the DLQ as ``oversized``."""
    max_metadata_bytes: int = 4096
    """XP_MAX_METADATA_BYTES: an event whose ``metadata`` serialises to more bytes goes to the
    DLQ as ``metadata_too_large``."""
    max_future_seconds: float = 86_400.0
    """XP_MAX_FUTURE_SECONDS: an event whose ``created_at`` is more than this after its record's
    timestamp goes to the DLQ as ``timestamp_out_of_range`` (seconds)."""
    max_past_seconds: float = 366 * 86_400.0
    """XP_MAX_PAST_SECONDS: ... or more than this before it (seconds; backfill events and
    their reversals exempt)."""
    metrics_port: int = 9400
    """XP_METRICS_PORT: port of the process's /metrics, /healthz and /readyz endpoints; 0 = off."""
    data_dir: str = "var/worker"
    """XP_DATA_DIR: directory of the worker's local table store (RocksDB)."""
    table_store: str = "rocksdb://"
    """XP_TABLE_STORE: Faust table store URL: ``rocksdb://`` (default) or ``memory://``."""
    rocksdb_memory_mb: int = 32
    """XP_ROCKSDB_MEMORY_MB: memory budget of all the worker's RocksDB stores together (MiB;
    one store per table and partition it holds, standbys included): one block cache of this
    size shared by every store, which also holds their index and filter blocks and is charged
    for their write buffers (at most half of it). Faust's defaults (a 2 GiB cache and 3 x 64
    MiB buffers per store) let the worker's RSS grow by hundreds of MiB over a 10-minute run.
    ``xp_worker_rocksdb_memory_bytes`` shows what is in use."""
    broker_session_timeout: float = 10.0
    """XP_BROKER_SESSION_TIMEOUT: consumer-group session timeout (seconds); 10 s joins fast."""
    broker_rebalance_timeout: float = 10.0
    """XP_BROKER_REBALANCE_TIMEOUT: how long a rebalance may take (seconds)."""
    worker_batch_records: int = 5000
    """XP_WORKER_BATCH_RECORDS: the worker folds at most this many records per checkpoint
    (one changelog record per key touched and one positions record per partition each)."""
    worker_batch_seconds: float = 0.05
    """XP_WORKER_BATCH_SECONDS: how long the worker waits for records when none are fetched
    yet (seconds): its share of the end-to-end latency when traffic is light."""
    worker_dlq_limit: float = 0.0
    """XP_WORKER_DLQ_LIMIT: the largest share of invalid records (0..1) over the last
    ``XP_WORKER_DLQ_WINDOW`` records; past it the worker stops advancing and says why instead
    of dead-lettering a bad producer deploy whole. 0 = off (the default)."""
    worker_dlq_window: int = 1000
    """XP_WORKER_DLQ_WINDOW: records over which ``XP_WORKER_DLQ_LIMIT`` takes the share."""
    worker_recovery_timeout_seconds: float = 300.0
    """XP_WORKER_RECOVERY_TIMEOUT_SECONDS: when the worker has waited this long (seconds)
    without progress for Faust's start and its first assignment, for an assignment after a
    revoke, or for the recovery of an assignment (no changelog record recovered), it starts
    again in place (same PID): a broker lost inside Faust's start or restarted during a
    recovery can hang Faust for good with no error. Progress resets it, so a long cold recovery
    that keeps reading is never cut short."""
    worker_standby_replicas: int = 0
    """XP_WORKER_STANDBY_REPLICAS: warm copies of each table partition kept by other worker
    processes (Faust's standby replicas): a partition that moves after a worker is lost then
    recovers from a nearly current local store instead of the whole changelog. 0 = none; it
    helps only with more worker processes than one."""
    worker_instance_id: str = ""
    """XP_WORKER_INSTANCE_ID: this worker's static group membership id (Kafka's
    ``group.instance.id``), unique per worker, stable across its restarts (a StatefulSet pod
    name). A worker restarted with the same id takes its partitions back at once instead of
    waiting for the session timeout of its dead predecessor. Empty (default): dynamic
    membership."""
    worker_failpoint: str = ""
    """XP_WORKER_FAILPOINT: crash tests only. ``<step>:<n>`` ends the worker with exit code
    137 (as kill -9) the n-th time a checkpoint reaches ``<step>`` (``folded``: batch folded,
    nothing sent; ``produced``: a partition's records sent in its open transaction;
    ``positioned``: transactions committed, local store not yet written);
    ``<step>:<n>:<seconds>`` pauses there with the event loop running, ``<step>:<n>:stop``
    stops the process (SIGSTOP) until SIGCONT. Several, comma-separated. Empty (default): off."""
    producer_linger_ms: int = 5
    """XP_PRODUCER_LINGER_MS: publisher batching delay (milliseconds)."""
    producer_idempotence: bool = True
    """XP_PRODUCER_IDEMPOTENCE: the idempotent producer for the publisher (a retried send is
    written once per partition); 0 turns it off for a broker without it (duplicates from
    producer retries are then dropped by event id downstream). The worker's transactional
    producers are idempotent whatever this says."""
    fetch_max_wait_ms: int = 100
    """XP_FETCH_MAX_WAIT_MS: how long a consumer's fetch may wait for records at the end of a
    partition (milliseconds), for every consumer including the Faust worker's (Faust fixes
    1,500). A fetch at a partition's end waits this long when nothing arrives, so it is part
    of every stage's latency at low traffic."""
    faust_sensor: bool = False
    """XP_FAUST_SENSOR: 1 exports Faust's own per-event Prometheus sensor (``faust_*``). Off by
    default: it costs about 30% of the worker's throughput, and the pipeline's own
    ``xp_*`` metrics (lag, records by outcome, freshness) are per batch."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``).

        Raises:
            ConfigError: a variable is present but malformed or out of range.
        """
        e = os.environ if env is None else env
        d = cls()
        protocol = e.get("KAFKA_SECURITY_PROTOCOL", d.kafka_security_protocol).upper()
        if protocol not in {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not a known protocol")
        mechanism = (e.get("KAFKA_SASL_MECHANISM") or "").upper() or None
        if protocol.startswith("SASL"):
            mechanism = mechanism or "PLAIN"
            if mechanism not in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}:
                raise ConfigError(f"KAFKA_SASL_MECHANISM={mechanism!r} is not PLAIN, "
                                  "SCRAM-SHA-256 or SCRAM-SHA-512")
            if not e.get("KAFKA_SASL_USERNAME") or not e.get("KAFKA_SASL_PASSWORD"):
                raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs "
                                  "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        if bool(e.get("KAFKA_SSL_CERTFILE")) != bool(e.get("KAFKA_SSL_KEYFILE")):
            raise ConfigError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        failpoint = e.get("XP_WORKER_FAILPOINT", d.worker_failpoint)
        if failpoint and not re.fullmatch(FAILPOINT_PATTERN, failpoint):
            raise ConfigError(f"XP_WORKER_FAILPOINT={failpoint!r} is not "
                              "<step>:<n>[:<seconds>|:stop], comma-separated, with step "
                              "folded, produced or positioned")
        store = e.get("XP_TABLE_STORE", d.table_store)
        if not store.startswith(("rocksdb://", "memory://")):
            raise ConfigError(f"XP_TABLE_STORE={store!r} must be rocksdb:// or memory://")
        return cls(
            kafka_bootstrap_servers=e.get("KAFKA_BOOTSTRAP_SERVERS", d.kafka_bootstrap_servers),
            kafka_security_protocol=protocol,
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username=e.get("KAFKA_SASL_USERNAME") or None,
            kafka_sasl_password=e.get("KAFKA_SASL_PASSWORD") or None,
            kafka_ssl_cafile=e.get("KAFKA_SSL_CAFILE") or None,
            kafka_ssl_certfile=e.get("KAFKA_SSL_CERTFILE") or None,
            kafka_ssl_keyfile=e.get("KAFKA_SSL_KEYFILE") or None,
            database_url=e.get("DATABASE_URL", d.database_url),
            xp_topic=e.get("XP_TOPIC", d.xp_topic),
            topic_partitions=_int(e, "XP_TOPIC_PARTITIONS", d.topic_partitions, 1),
            worker_group=e.get("XP_WORKER_GROUP", d.worker_group),
            ledger_group=e.get("XP_LEDGER_GROUP", d.ledger_group),
            totals_group=e.get("XP_TOTALS_GROUP", d.totals_group),
            action_topic=e.get("XP_ACTION_TOPIC", d.action_topic),
            claims_topic=e.get("XP_CLAIMS_TOPIC", d.claims_topic),
            sink_dlq_topic=e.get("XP_SINK_DLQ_TOPIC", d.sink_dlq_topic),
            award_group=e.get("XP_AWARD_GROUP", d.award_group),
            grant_group=e.get("XP_GRANT_GROUP", d.grant_group),
            rules_group=e.get("XP_RULES_GROUP", d.rules_group),
            policies_topic=e.get("XP_POLICIES_TOPIC", d.policies_topic),
            outcomes_topic=e.get("XP_OUTCOMES_TOPIC", d.outcomes_topic),
            policy_min_lead_seconds=_float(e, "XP_POLICY_MIN_LEAD_SECONDS",
                                           d.policy_min_lead_seconds, 0.0),
            action_ledger_group=e.get("XP_ACTION_LEDGER_GROUP", d.action_ledger_group),
            progress_group=e.get("XP_PROGRESS_GROUP", d.progress_group),
            topic_replication_factor=_int(e, "XP_TOPIC_REPLICATION_FACTOR",
                                          d.topic_replication_factor, 1),
            sink_batch_records=_int(e, "XP_SINK_BATCH_RECORDS", d.sink_batch_records, 1),
            sink_batch_bytes=_int(e, "XP_SINK_BATCH_BYTES", d.sink_batch_bytes, 1),
            sink_batch_seconds=_float(e, "XP_SINK_BATCH_SECONDS", d.sink_batch_seconds),
            db_retry_max_seconds=_float(e, "XP_DB_RETRY_MAX_SECONDS", d.db_retry_max_seconds, 0.1),
            broker_wait_seconds=_float(e, "XP_BROKER_WAIT_SECONDS", d.broker_wait_seconds, 0.0),
            dedupe_horizon_seconds=_float(
                e, "XP_DEDUPE_HORIZON_SECONDS", d.dedupe_horizon_seconds, 1.0
            ),
            claim_max_ahead_seconds=_float(
                e, "XP_CLAIM_MAX_AHEAD_SECONDS", d.claim_max_ahead_seconds, 0.0
            ),
            dedupe_expire_interval_seconds=_float(
                e, "XP_DEDUPE_EXPIRE_INTERVAL_SECONDS", d.dedupe_expire_interval_seconds, 0.1
            ),
            dedupe_expire_slice=_int(e, "XP_DEDUPE_EXPIRE_SLICE", d.dedupe_expire_slice, 1),
            max_record_bytes=_int(e, "XP_MAX_RECORD_BYTES", d.max_record_bytes, 256),
            max_metadata_bytes=_int(e, "XP_MAX_METADATA_BYTES", d.max_metadata_bytes, 2),
            max_future_seconds=_float(e, "XP_MAX_FUTURE_SECONDS", d.max_future_seconds, 0.0),
            max_past_seconds=_float(e, "XP_MAX_PAST_SECONDS", d.max_past_seconds, 0.0),
            metrics_port=_int(e, "XP_METRICS_PORT", d.metrics_port),
            data_dir=e.get("XP_DATA_DIR", d.data_dir),
            table_store=store,
            rocksdb_memory_mb=_int(e, "XP_ROCKSDB_MEMORY_MB", d.rocksdb_memory_mb, 8),
            broker_session_timeout=_float(
                e, "XP_BROKER_SESSION_TIMEOUT", d.broker_session_timeout, 1.0
            ),
            broker_rebalance_timeout=_float(
                e, "XP_BROKER_REBALANCE_TIMEOUT", d.broker_rebalance_timeout, 1.0
            ),
            worker_batch_records=_int(e, "XP_WORKER_BATCH_RECORDS", d.worker_batch_records, 1),
            worker_batch_seconds=_float(
                e, "XP_WORKER_BATCH_SECONDS", d.worker_batch_seconds, 0.001
            ),
            worker_dlq_limit=_float(e, "XP_WORKER_DLQ_LIMIT", d.worker_dlq_limit, 0.0, 1.0),
            worker_dlq_window=_int(e, "XP_WORKER_DLQ_WINDOW", d.worker_dlq_window, 1),
            worker_instance_id=e.get("XP_WORKER_INSTANCE_ID", d.worker_instance_id),
            worker_standby_replicas=_int(e, "XP_WORKER_STANDBY_REPLICAS",
                                         d.worker_standby_replicas, 0),
            worker_recovery_timeout_seconds=_float(
                e, "XP_WORKER_RECOVERY_TIMEOUT_SECONDS", d.worker_recovery_timeout_seconds, 1.0),
            worker_failpoint=failpoint,
            producer_linger_ms=_int(e, "XP_PRODUCER_LINGER_MS", d.producer_linger_ms),
            fetch_max_wait_ms=_int(e, "XP_FETCH_MAX_WAIT_MS", d.fetch_max_wait_ms, 1),
            faust_sensor=_int(e, "XP_FAUST_SENSOR", int(d.faust_sensor)) != 0,
            producer_idempotence=_int(e, "XP_PRODUCER_IDEMPOTENCE",
                                      int(d.producer_idempotence)) != 0,
        )

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (tests, the local stack)."""
        return replace(self, **changes)

    @property
    def dlq_topic(self) -> str:
        """The DLQ topic of :attr:`xp_topic`."""
        return topics.dlq_topic(self.xp_topic)

    @property
    def action_dlq_topic(self) -> str:
        """The DLQ topic of :attr:`action_topic`."""
        return topics.dlq_topic(self.action_topic)

    @property
    def claims_dlq_topic(self) -> str:
        """The DLQ topic of :attr:`claims_topic`."""
        return topics.dlq_topic(self.claims_topic)

    @property
    def grant_changelog_topic(self) -> str:
        """The changelog of the worker's grant state table (input of the grant writer)."""
        return topics.changelog_topic(self.worker_group, topics.GRANT_TABLE)

    @property
    def progress_changelog_topic(self) -> str:
        """The changelog of the worker's vector progress table (input of the progress writer)."""
        return topics.changelog_topic(self.worker_group, topics.PROGRESS_TABLE)

    @property
    def totals_changelog_topic(self) -> str:
        """The changelog topic of the worker's totals table (input of the totals writer)."""
        return topics.changelog_topic(self.worker_group, topics.TOTALS_TABLE)

    def limits(self) -> Limits:
        """The input bounds every consumer of the XP topic validates with."""
        from streams.events import Limits

        return Limits(self.max_record_bytes, self.max_metadata_bytes, self.max_future_seconds,
                      self.max_past_seconds)

    def __repr__(self) -> str:
        """Passwords redacted (a repr ends up in logs and tracebacks)."""
        return f"Settings({self.describe()})"

    def describe(self) -> dict[str, Any]:
        """Return the settings as a dict safe to print: passwords redacted."""
        d = asdict(self)
        for name, value in d.items():
            if name.endswith("_url") and isinstance(value, str):
                d[name] = redact_url(value)
        if d["kafka_sasl_password"]:
            d["kafka_sasl_password"] = "***"  # noqa: S105 - the redaction marker
        return d
