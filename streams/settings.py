"""Settings: one frozen object, the only reader of the environment (README, Settings).

Each setting is declared once, on its field (:func:`setting`): its environment variable, its
default (which runs the local stack), its bounds, unit and description. Everything else derives
from that declaration: :meth:`Settings.from_env` (parsing, bounds, a warning for an unknown
``XP_`` variable), :func:`to_env` (the environment of a child process), :func:`settings_table`
(the README's table, which a contract test compares), and the deploy manifests' check that they
set only real variables. The few variables that are not settings of the pipeline's processes
(the local stack's, a command's, an internal one) are declared here too (:data:`OTHER`). No
other module spells a variable's name (a contract test).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from streams import topics
from streams.errors import ConfigError

if TYPE_CHECKING:
    from streams.events import Limits

log = logging.getLogger(__name__)

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
"""How a boolean variable may be spelled (any case)."""


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name and how it is read (:func:`setting`)."""

    name: str
    doc: str
    """What it means (the README's table shows it)."""
    unit: str = ""
    """``s``, ``ms``, ``MiB``, ``bytes`` or empty."""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    """The allowed values (compared in upper case), or any when empty."""
    secret: bool = False
    """Never shown (repr, logs, :meth:`Settings.describe`)."""
    default: str = ""
    """For :data:`OTHER` variables: the default as the README shows it."""

    def read(self, env: Mapping[str, str] | None = None) -> str | None:
        """The variable's value in ``env`` (default ``os.environ``); None when unset or empty."""
        value = (os.environ if env is None else env).get(self.name)
        return value or None


def setting(default: Any, name: str, doc: str, *, unit: str = "", minimum: float | None = None,
            maximum: float | None = None, choices: tuple[str, ...] = (),
            secret: bool = False) -> Any:
    """Declare a field of :class:`Settings`: its ``default``, the environment variable
    ``name`` that sets it and the rest of :class:`Variable`."""
    return field(default=default, repr=not secret, metadata={"variable": Variable(
        name, doc, unit, minimum, maximum, choices, secret)})


LOCAL_BROKER = Variable(
    "XP_LOCAL_BROKER", "the local stack's broker (`streams dev up`, `streams lab demo`, `bench`, "
    "`chaos`, `hostile`): "
    "`kafka` (Apache Kafka 4.4, one node) or `kafka-3` (three nodes)", default="kafka")
KAFKA_JARS = Variable(
    "XP_KAFKA_JARS", "where the local Apache Kafka's jars are kept (fetched with Maven when "
    "missing)", default="build/kafka-4.4.0")
LEGACY_DATABASE_URL = Variable(
    "XP_LEGACY_DATABASE_URL", "`streams backfill` / `compare-xp`: database of the legacy "
    "balance table", default="DATABASE_URL")
START_ATTEMPT = Variable(
    "XP_WORKER_START_ATTEMPT", "internal: the worker's starts in place in a row "
    "(streams.worker.restart); never set it", default="1")
OTHER = (LOCAL_BROKER, KAFKA_JARS, LEGACY_DATABASE_URL, START_ATTEMPT)
"""The variables that are not fields of :class:`Settings`: the local stack's and a command's
(shown in the README's table), and the worker's internal start counter."""


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


FAILPOINT_PATTERN = (r"(recovered|folded|produced|positioned):[1-9][0-9]*(:([0-9.]+|stop))?"
                     r"(,(recovered|folded|produced|positioned):[1-9][0-9]*(:([0-9.]+|stop))?)*")
"""The form of ``XP_WORKER_FAILPOINT`` (:class:`streams.worker.checkpoint.Failpoint`)."""


def _parse(var: Variable, kind: str, raw: str) -> Any:
    """``raw`` as the field's type ``kind`` (its annotation), within ``var``'s bounds.

    Raises:
        ConfigError: not of that type, out of bounds, or not one of the choices.
    """
    if kind == "bool":
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise ConfigError(f"{var.name}={raw!r} is not a boolean (1/0, true/false, yes/no, "
                          "on/off)")
    value: Any = raw
    if kind in ("int", "float"):
        try:
            value = int(raw) if kind == "int" else float(raw)
        except ValueError:
            what = "a whole number" if kind == "int" else "a number"
            raise ConfigError(f"{var.name}={raw!r} is not {what}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{var.name}={raw!r} is not a finite number")
        if var.minimum is not None and value < var.minimum:
            raise ConfigError(f"{var.name}={value} is below its minimum {var.minimum:g}")
        if var.maximum is not None and value > var.maximum:
            raise ConfigError(f"{var.name}={value} is above its maximum {var.maximum:g}")
    elif var.choices:
        value = raw.upper()
        if value not in var.choices:
            raise ConfigError(f"{var.name}={raw!r} is not {', '.join(var.choices[:-1])} or "
                              f"{var.choices[-1]}")
    return value


@dataclass(frozen=True)
class Settings:
    """All configuration of every XP Streams process, one field per setting, each declared
    with :func:`setting` (its variable, default, bounds, unit and meaning).

    Read once with :meth:`from_env`; tests build one directly or with :meth:`with_`.
    """

    kafka_bootstrap_servers: str = setting(
        "127.0.0.1:9092", "KAFKA_BOOTSTRAP_SERVERS",
        "comma-separated host:port list of the Kafka-protocol brokers.")
    kafka_security_protocol: str = setting(
        "PLAINTEXT", "KAFKA_SECURITY_PROTOCOL",
        "the security protocol of the brokers' listener.",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    kafka_sasl_mechanism: str | None = setting(
        None, "KAFKA_SASL_MECHANISM",
        "the SASL mechanism (with a SASL protocol; unset: PLAIN).",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    kafka_sasl_username: str | None = setting(
        None, "KAFKA_SASL_USERNAME", "the SASL login (with a SASL protocol).")
    kafka_sasl_password: str | None = setting(
        None, "KAFKA_SASL_PASSWORD", "the SASL password (with a SASL protocol; never logged).",
        secret=True)
    kafka_ssl_cafile: str | None = setting(
        None, "KAFKA_SSL_CAFILE",
        "CA bundle (PEM) that signed the brokers' certificates (None: the system's CAs).")
    kafka_ssl_certfile: str | None = setting(
        None, "KAFKA_SSL_CERTFILE",
        "this client's certificate (PEM) for brokers that require mutual TLS.")
    kafka_ssl_keyfile: str | None = setting(
        None, "KAFKA_SSL_KEYFILE",
        "the private key (PEM) of KAFKA_SSL_CERTFILE.")
    database_url: str = setting(
        "postgresql://postgres@127.0.0.1:5432/xp_streams", "DATABASE_URL",
        "libpq URL of the PostgreSQL database holding the ledger and totals.")
    xp_topic: str = setting(
        topics.XP_EVENTS, "XP_TOPIC",
        "input topic of XP events (its DLQ is ``<topic>.dlq``).")
    topic_partitions: int = setting(
        12, "XP_TOPIC_PARTITIONS",
        "partitions of the input topic when this project creates it.",
        minimum=1)
    worker_group: str = setting(
        topics.WORKER_GROUP, "XP_WORKER_GROUP",
        "consumer group and Faust app id of the dedupe/fold worker.")
    ledger_group: str = setting(
        topics.LEDGER_GROUP, "XP_LEDGER_GROUP",
        "consumer group of the ledger sink.")
    totals_group: str = setting(
        topics.TOTALS_WRITER_GROUP, "XP_TOTALS_GROUP",
        "consumer group of the totals writer.")
    action_topic: str = setting(
        topics.ACTION_EVENTS, "XP_ACTION_TOPIC",
        "input topic of action events, key = profile_id (DLQ ``<topic>.dlq``).")
    action_ledger_group: str = setting(
        topics.ACTION_LEDGER_GROUP, "XP_ACTION_LEDGER_GROUP",
        "consumer group of the action ledger sink.")
    progress_group: str = setting(
        topics.PROGRESS_WRITER_GROUP, "XP_PROGRESS_GROUP",
        "consumer group of the vector progress writer.")
    claims_topic: str = setting(
        topics.CLAIMS, "XP_CLAIMS_TOPIC",
        "input topic of daily-login claims and reward-zone changes, key = student_id, as many "
        "partitions as the XP topic (DLQ ``<topic>.dlq``).")
    policies_topic: str = setting(
        topics.POLICIES, "XP_POLICIES_TOPIC",
        "grant policy versions and the season calendar (one partition, compacted).")
    outcomes_topic: str = setting(
        topics.CLAIM_OUTCOMES, "XP_OUTCOMES_TOPIC",
        "the grant stream's outcome of each claim, key = student_id.")
    sink_dlq_topic: str = setting(
        topics.SINK_DLQ, "XP_SINK_DLQ_TOPIC",
        "where every sink sends a record whose row PostgreSQL refuses (a CHECK, a length, an "
        "encoding, a foreign key), with the database's message in headers (docs/design.md, "
        "\"Sinks: refused rows\").")
    policy_min_lead_seconds: float = setting(
        3600.0, "XP_POLICY_MIN_LEAD_SECONDS",
        "a policy version must be published this long before the start of its effective_day at "
        "UTC+14 (seconds); a later one is refused.",
        minimum=0.0, unit="s")
    award_group: str = setting(
        topics.AWARD_SINK_GROUP, "XP_AWARD_GROUP",
        "consumer group of the award sink.")
    grant_group: str = setting(
        topics.GRANT_WRITER_GROUP, "XP_GRANT_GROUP",
        "consumer group of the grant writer (streaks and reward zones).")
    rules_group: str = setting(
        topics.RULES_SINK_GROUP, "XP_RULES_GROUP",
        "consumer group of the rules sink (policy versions and seasons).")
    topic_replication_factor: int = setting(
        1, "XP_TOPIC_REPLICATION_FACTOR",
        "replicas of each topic the pipeline creates (its topics, the DLQs and the worker's "
        "changelogs); 3 on a production cluster.",
        minimum=1)
    sink_batch_records: int = setting(
        20_000, "XP_SINK_BATCH_RECORDS",
        "a sink batch is written once it holds this many records.",
        minimum=1)
    sink_batch_bytes: int = setting(
        8 * 1024 * 1024, "XP_SINK_BATCH_BYTES",
        "... or this many bytes of record values.",
        minimum=1, unit="bytes")
    sink_batch_seconds: float = setting(
        0.05, "XP_SINK_BATCH_SECONDS",
        "... or when its oldest record has waited this long (seconds).",
        minimum=0.0, unit="s")
    db_retry_max_seconds: float = setting(
        30.0, "XP_DB_RETRY_MAX_SECONDS",
        "ceiling of the exponential backoff between database retries.",
        minimum=0.1, unit="s")
    broker_wait_seconds: float = setting(
        120.0, "XP_BROKER_WAIT_SECONDS",
        "how long the worker and the sinks wait at start-up for a broker to answer (seconds), "
        "retrying with backoff and logging each failure; then they exit 1 with one line. A "
        "refused login or an untrusted certificate fails at once. 0: no wait.",
        minimum=0.0, unit="s")
    dedupe_horizon_seconds: float = setting(
        7 * 24 * 3600.0, "XP_DEDUPE_HORIZON_SECONDS",
        "how long an event id stays in the worker's dedupe table. An id older than this is "
        "checked against the ledger instead (docs/design.md, guarantee 8).",
        minimum=1.0, unit="s")
    claim_max_ahead_seconds: float = setting(
        300.0, "XP_CLAIM_MAX_AHEAD_SECONDS",
        "a claim whose record time is more than this ahead of the worker's clock goes to the "
        "claims DLQ as ``claim_in_future`` instead of being decided, so a producer with a bad "
        "clock never moves a learner's reward day ahead (seconds; docs/design.md, \"Grants\").",
        minimum=0.0, unit="s")
    dedupe_expire_interval_seconds: float = setting(
        1.0, "XP_DEDUPE_EXPIRE_INTERVAL_SECONDS",
        "how often the worker reads one slice of its dedupe table to drop entries past the "
        "horizon (seconds).",
        minimum=0.1, unit="s")
    dedupe_expire_slice: int = setting(
        10_000, "XP_DEDUPE_EXPIRE_SLICE",
        "dedupe entries read per expiry slice, shared by the held partitions (a slice of 10,000 "
        "costs about 13 ms of the worker's event loop). Slice / interval is the scan rate "
        "(entries/s); keep it above the average event rate, or entries outlive the horizon (never "
        "wrong, only a larger table).",
        minimum=1)
    max_record_bytes: int = setting(
        64 * 1024, "XP_MAX_RECORD_BYTES",
        "a record value larger than this goes to the DLQ as ``oversized``.",
        minimum=256, unit="bytes")
    max_metadata_bytes: int = setting(
        4096, "XP_MAX_METADATA_BYTES",
        "an event whose ``metadata`` serialises to more bytes goes to the DLQ as "
        "``metadata_too_large``.",
        minimum=2, unit="bytes")
    max_future_seconds: float = setting(
        86_400.0, "XP_MAX_FUTURE_SECONDS",
        "an event whose ``created_at`` is more than this after its record's timestamp goes to the "
        "DLQ as ``timestamp_out_of_range`` (seconds).",
        minimum=0.0, unit="s")
    max_past_seconds: float = setting(
        366 * 86_400.0, "XP_MAX_PAST_SECONDS",
        "... or more than this before it (seconds; backfill events and their reversals exempt).",
        minimum=0.0, unit="s")
    metrics_port: int = setting(
        9400, "XP_METRICS_PORT",
        "port of the process's /metrics, /healthz and /readyz endpoints; 0 = off.")
    data_dir: str = setting(
        "var/worker", "XP_DATA_DIR",
        "directory of the worker's local table store (RocksDB).")
    table_store: str = setting(
        "rocksdb://", "XP_TABLE_STORE",
        "Faust table store URL: ``rocksdb://`` (default) or ``memory://``.")
    rocksdb_memory_mb: int = setting(
        32, "XP_ROCKSDB_MEMORY_MB",
        "memory budget of all the worker's RocksDB stores together (MiB; one store per table and "
        "partition it holds, standbys included): one block cache of this size shared by every "
        "store, which also holds their index and filter blocks and is charged for their write "
        "buffers (at most half of it). Faust's defaults (a 2 GiB cache and 3 x 64 MiB buffers per "
        "store) let the worker's RSS grow by hundreds of MiB over a 10-minute run. "
        "``xp_worker_rocksdb_memory_bytes`` shows what is in use.",
        minimum=8, unit="MiB")
    broker_session_timeout: float = setting(
        10.0, "XP_BROKER_SESSION_TIMEOUT",
        "consumer-group session timeout (seconds); 10 s joins fast.",
        minimum=1.0, unit="s")
    broker_rebalance_timeout: float = setting(
        10.0, "XP_BROKER_REBALANCE_TIMEOUT",
        "how long a rebalance may take (seconds).",
        minimum=1.0, unit="s")
    worker_batch_records: int = setting(
        5000, "XP_WORKER_BATCH_RECORDS",
        "the worker folds at most this many records per checkpoint (one changelog record per key "
        "touched and one positions record per partition each).",
        minimum=1)
    worker_checkpoint_records: int = setting(
        20_000, "XP_WORKER_CHECKPOINT_RECORDS",
        "under a backlog (a fetch of ``XP_WORKER_BATCH_RECORDS``), the worker folds further "
        "batches into the next checkpoint while the previous one commits, up to about this many "
        "records, instead of waiting for it: fewer, larger Kafka transactions. Below "
        "``XP_WORKER_BATCH_RECORDS``: one batch per checkpoint.",
        minimum=1)
    worker_checkpoint_bytes: int = setting(
        4 * 1024 * 1024, "XP_WORKER_CHECKPOINT_BYTES",
        "... and up to about this many bytes of changelog and output records, estimated from "
        "the previous checkpoints' bytes per source record (about 230 for an XP event, 1,100 "
        "for a daily-login claim): it bounds the worker's memory under a backlog, which grows "
        "by about 17 times what a checkpoint sends.",
        minimum=1, unit="bytes")
    worker_batch_seconds: float = setting(
        0.05, "XP_WORKER_BATCH_SECONDS",
        "how long the worker waits for records when none are fetched yet (seconds): its share of "
        "the end-to-end latency when traffic is light.",
        minimum=0.001, unit="s")
    worker_fetch_wait_ms: int = setting(
        50, "XP_WORKER_FETCH_WAIT_MS",
        "how long the broker gathers records for the worker's fetch before it answers "
        "(milliseconds; sooner once 1 MiB is ready): under steady traffic the worker folds and "
        "checkpoints a batch about this often, and each checkpoint costs one Kafka transaction "
        "per partition, so it trades a little latency for far less broker and worker CPU. "
        "0 = answer as soon as one record is ready (``XP_FETCH_MAX_WAIT_MS`` then bounds an "
        "idle fetch).",
        minimum=0, unit="ms")
    worker_dlq_limit: float = setting(
        0.0, "XP_WORKER_DLQ_LIMIT",
        "the largest share of invalid records (0..1) over the last ``XP_WORKER_DLQ_WINDOW`` "
        "records; past it the worker stops advancing and says why instead of dead-lettering a bad "
        "producer deploy whole. 0 = off (the default).",
        minimum=0.0, maximum=1.0)
    worker_dlq_window: int = setting(
        1000, "XP_WORKER_DLQ_WINDOW",
        "records over which ``XP_WORKER_DLQ_LIMIT`` takes the share.",
        minimum=1)
    worker_recovery_timeout_seconds: float = setting(
        300.0, "XP_WORKER_RECOVERY_TIMEOUT_SECONDS",
        "when the worker has waited this long (seconds) without progress for Faust's start and "
        "its first assignment, for an assignment after a revoke, or for the recovery of an "
        "assignment (no changelog record recovered), it starts again in place (same PID): a "
        "broker lost inside Faust's start or restarted during a recovery can hang Faust for good "
        "with no error. Progress resets it, so a long cold recovery that keeps reading is never "
        "cut short.",
        minimum=1.0, unit="s")
    worker_standby_replicas: int = setting(
        0, "XP_WORKER_STANDBY_REPLICAS",
        "warm copies of each table partition kept by other worker processes (Faust's assignor "
        "places them; the worker applies their changelogs in batches): a partition that moves "
        "after a worker is lost then recovers from a nearly current local store instead of the "
        "whole changelog. 0 = none; it helps only with more worker processes than one.",
        minimum=0)
    worker_instance_id: str = setting(
        "", "XP_WORKER_INSTANCE_ID",
        "this worker's static group membership id (Kafka's ``group.instance.id``), unique per "
        "worker, stable across its restarts (a StatefulSet pod name). A worker restarted with the "
        "same id takes its partitions back at once instead of waiting for the session timeout of "
        "its dead predecessor. Empty (default): dynamic membership.")
    worker_failpoint: str = setting(
        "", "XP_WORKER_FAILPOINT",
        "crash tests only. ``<step>:<n>`` ends the worker with exit code 137 (as kill -9) the "
        "n-th time the worker reaches ``<step>`` (``recovered``: an assignment's tables "
        "recovered, its partitions' producers not yet made; ``folded``: batch folded, nothing "
        "sent; ``produced``: a partition's records sent in its open transaction; ``positioned``: "
        "transactions committed, local store not yet written); ``<step>:<n>:<seconds>`` pauses "
        "there with the event loop running, ``<step>:<n>:stop`` stops the process (SIGSTOP) until "
        "SIGCONT. Several, comma-separated. Empty (default): off.")
    producer_linger_ms: int = setting(
        5, "XP_PRODUCER_LINGER_MS",
        "publisher batching delay (milliseconds).",
        unit="ms")
    producer_idempotence: bool = setting(
        True, "XP_PRODUCER_IDEMPOTENCE",
        "the idempotent producer for the publisher (a retried send is written once per "
        "partition); 0 turns it off for a broker without it (duplicates from producer retries are "
        "then dropped by event id downstream). The worker's transactional producers are "
        "idempotent whatever this says.")
    fetch_max_wait_ms: int = setting(
        100, "XP_FETCH_MAX_WAIT_MS",
        "how long a consumer's fetch may wait for records at the end of a partition "
        "(milliseconds), for every consumer including the Faust worker's (Faust fixes 1,500; the "
        "worker's batch reader gathers for ``XP_WORKER_FETCH_WAIT_MS`` instead). A "
        "fetch at a partition's end waits this long when nothing arrives, so it is part of every "
        "stage's latency at low traffic.",
        minimum=1, unit="ms")
    log_level: str = setting(
        "INFO", "XP_LOG_LEVEL",
        "the lowest level logged, for every logger of the process (Faust's and aiokafka's "
        "included; the harness's commands log warnings unless this is set).",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    log_format: str = setting(
        "TEXT", "XP_LOG_FORMAT",
        "TEXT: one human-readable line per record; JSON: one JSON object per line (time, "
        "level, logger, message, and the stage, group, partition and offset where they "
        "apply).",
        choices=("TEXT", "JSON"))
    faust_sensor: bool = setting(
        False, "XP_FAUST_SENSOR",
        "1 exports Faust's own per-event Prometheus sensor (``faust_*``). Off by default: it "
        "costs about 30% of the worker's throughput, and the pipeline's own ``xp_*`` metrics "
        "(lag, records by outcome, freshness) are per batch.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 warn_unknown: bool = True) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``): each field from its
        variable (unset or empty: the default), then the checks that span fields
        (:meth:`checked`). Logs a warning for each ``XP_`` variable that is no setting (a typo
        would otherwise be ignored in silence), unless ``warn_unknown`` is False.

        Raises:
            ConfigError: a variable is malformed or out of range, or two contradict.
        """
        e = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            var: Variable = f.metadata["variable"]
            raw = e.get(var.name)
            if raw:
                values[f.name] = _parse(var, str(f.type), raw)
        for name in unknown_variables(e) if warn_unknown else ():
            close = difflib.get_close_matches(name, known_names(), n=1)
            log.warning("%s is not a setting and is ignored%s", name,
                        f" (did you mean {close[0]}?)" if close else "")
        return cls(**values).checked()

    def checked(self) -> Settings:
        """These settings, after the checks that span fields (a SASL protocol without a
        mechanism gets PLAIN).

        Raises:
            ConfigError: SASL without its login, a client certificate without its key (or the
                reverse), a malformed failpoint, an unknown table store.
        """
        s = self
        if s.kafka_security_protocol.startswith("SASL"):
            s = s if s.kafka_sasl_mechanism else replace(s, kafka_sasl_mechanism="PLAIN")
            if not s.kafka_sasl_username or not s.kafka_sasl_password:
                raise ConfigError(f"{variable('kafka_security_protocol').name}="
                                  f"{s.kafka_security_protocol} needs "
                                  f"{variable('kafka_sasl_username').name} and "
                                  f"{variable('kafka_sasl_password').name}")
        if bool(s.kafka_ssl_certfile) != bool(s.kafka_ssl_keyfile):
            raise ConfigError(f"{variable('kafka_ssl_certfile').name} and "
                              f"{variable('kafka_ssl_keyfile').name} go together")
        if s.worker_failpoint and not re.fullmatch(FAILPOINT_PATTERN, s.worker_failpoint):
            raise ConfigError(f"{variable('worker_failpoint').name}={s.worker_failpoint!r} is "
                              "not <step>:<n>[:<seconds>|:stop], comma-separated, with step "
                              "recovered, folded, produced or positioned")
        if not s.table_store.startswith(("rocksdb://", "memory://")):
            raise ConfigError(f"{variable('table_store').name}={s.table_store!r} must be "
                              "rocksdb:// or memory://")
        return s

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


def variable(name: str) -> Variable:
    """The :class:`Variable` of the field ``name`` of :class:`Settings`.

    Raises:
        KeyError: no such field.
    """
    for f in fields(Settings):
        if f.name == name:
            var: Variable = f.metadata["variable"]
            return var
    raise KeyError(name)


def variables() -> list[Variable]:
    """The variables of every field of :class:`Settings`, in declaration order."""
    return [f.metadata["variable"] for f in fields(Settings)]


def known_names() -> list[str]:
    """Every variable's name: the settings' and :data:`OTHER`."""
    return [v.name for v in variables()] + [v.name for v in OTHER]


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """The ``XP_`` variables of ``env`` that are neither a setting nor in :data:`OTHER`."""
    known = set(known_names())
    return sorted(n for n in env if n.startswith("XP_") and n not in known)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the environment that makes :meth:`Settings.from_env` read them back
    (a child process of the local stack): every field's variable, an unset one as the empty
    string (which reads as unset, and hides a value the parent's environment has)."""
    return {f.metadata["variable"].name: "" if getattr(settings, f.name) is None
            else _shown(getattr(settings, f.name)) for f in fields(Settings)}


def settings_table() -> str:
    """The README's table of every variable (Markdown): name, default (with its unit),
    meaning (with its bounds). A contract test keeps README.md equal to it; ``streams
    settings --markdown`` prints it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        var: Variable = f.metadata["variable"]
        default = f.default if f.default is not MISSING else None
        shown = "unset" if default in (None, "") else f"`{_shown(default)}`"
        if var.unit and default not in (None, ""):
            shown += f" {var.unit}"
        bounds = []
        if var.minimum is not None:
            bounds.append(f"at least {var.minimum:g}")
        if var.maximum is not None:
            bounds.append(f"at most {var.maximum:g}")
        if var.choices:
            bounds.append("one of " + ", ".join(f"`{c}`" for c in var.choices))
        meaning = var.doc.rstrip(".") + (f" ({'; '.join(bounds)})" if bounds else "")
        rows.append(f"| `{var.name}` | {shown} | {meaning} |")
    for var in OTHER[:-1]:  # the internal start counter is left out
        rows.append(f"| `{var.name}` | `{var.default}` | {var.doc} |")
    return "\n".join(rows) + "\n"
