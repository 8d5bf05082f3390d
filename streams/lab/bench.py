"""``streams lab bench``: every stage of the pipeline measured against its limits, in one run.

Against the configured broker and database (or ``--local``: a throwaway local stack; the
environment's other settings, the pipeline's tuning, apply either way), with the
same loadgen workload for every stage (``--events`` records, ``--students``, ``--partitions``;
duplicates and invalid records included), prints one table:

- limits: publish rate (aiokafka, acks=all), raw consume (aiokafka ``getmany`` + orjson, no
  group), plain COPY into an unindexed table; and the sink's own SQL without Python (COPY to
  staging + ``INSERT ... ON CONFLICT`` into the indexed ledger);
- baselines: one INSERT and commit per event; the design this pipeline replaced (a per-row
  trigger keeping ``xp_totals``, 1,000 rows per transaction);
- ours: the fold worker alone, the ledger sink alone (each its own process and consumer group;
  events committed from its first commit seen to lag 0), both again on the same workload as
  batched records (``--batch`` events a record), the whole pipeline end to end (from the
  first publish to ledger and totals committed, checked against the loadgen expectation);
- from process start: a worker with an existing store (it folded a warm-up workload and
  stopped) started on the workload's backlog, timed from the process's start to its first
  commit and to lag 0;
- scale: one worker process, two in one group, two with standby replicas, each from the moment
  every process is ready (the group settled) to lag 0, with the CPU seconds of the workers, the
  broker and PostgreSQL; the standbys' CPU per event against the active workers';
- recovery: one worker killed -9 under the backlog a fast publish leaves, restarted at once
  (static group membership), timed from the kill to lag 0 against the bar backlog / the
  worker-alone rate + 10 s;
- latency: events of ``--students`` fresh students in turn, offered at ``--rate`` events/s for
  ``--latency-seconds``; per event, from its publish acknowledgement to the first poll of
  ``xp_totals`` (every ``POLL_S`` seconds) whose ``version`` shows it applied: p50, p99, max;
  each process's RSS is sampled meanwhile (flat or not at a steady rate);
- peak RSS (VmHWM) of each pipeline process.

Ratios compare a stage with the limit of its side measured in the same run (broker side: raw
consume; database side: plain COPY). Everything lives in its own topics (``bench-<run>-*``)
and its own schema (``xp_bench_<run>``), removed afterwards: the database and the topics are
left as they were found. ``--json FILE`` writes the same figures for scripts; ``--profile DIR``
records py-spy profiles (folded stacks, idle included) of every process it starts.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from aiokafka.structs import TopicPartition
from prometheus_client.samples import Sample

from streams import kafka, lag, topology
from streams.db.connect import connect
from streams.db.queries import query
from streams.dev.procs import free_port, memory_mib
from streams.dev.scratch import Scratch
from streams.dev.stack import PipelineProcess
from streams.errors import InvalidEvent
from streams.events import decode_xp, partition_for
from streams.lab.loadgen import (
    CLAIM_POLICY,
    CLAIM_POLICY_PUBLISHED_MS,
    Expected,
    LoadSpec,
    Record,
    batch_records,
    claim_calendar,
    generate,
    generate_claims,
    publish_records,
    publish_timed,
)
from streams.lab.outcome import read_outcome
from streams.lab.queries import lab_query
from streams.settings import Settings
from streams.xp.ledger import ledger_row

POLL_S = 0.05
"""Interval of the latency stage's ``xp_totals`` poll (seconds): the resolution of its figures."""

POLL_CHUNK = 2000
"""Most students one latency poll asks for (the oldest pending first)."""

NAIVE_EVENTS = 3_000
"""Events of the one-INSERT-and-commit-per-event baseline (it is slow by design)."""

TRIGGER_EVENTS = 50_000
"""Events (at most) of the per-row trigger baseline."""

BROKER_LIMIT = "raw consume (getmany + orjson)"
"""Name of the broker side's limit stage."""
DATABASE_LIMIT = "plain COPY, unindexed table"
"""Name of the database side's limit stage."""
PUBLISH_LIMIT = "publish (aiokafka, acks=all)"
"""Name of the producer's limit stage."""
LIMITS = frozenset({PUBLISH_LIMIT, BROKER_LIMIT, DATABASE_LIMIT})
"""The stages that are limits (shown as such, never compared)."""

SINK_ROUNDS = 3
"""The ledger sink alone and its SQL path are each measured this many times, alternately,
and reported by their median round: on the reference machine (two cores shared by broker,
database and sink) one round of either moves by +-15% from run to run."""

TIMED_STEPS = {
    "worker": ("worker checkpoints", "xp_worker_checkpoint_seconds",
               "xp_worker_checkpoint_records"),
    "sink": ("ledger sink batches", "xp_sink_batch_write_seconds", "xp_sink_batch_records"),
    "totals-writer": ("totals writer batches", "xp_sink_batch_write_seconds",
                      "xp_sink_batch_records"),
}
"""Per pipeline command, the step the latency stage times from its ``/metrics``: the step's
name, its duration histogram (seconds) and its size histogram (records; '' = none). One
checkpoint is one Kafka transaction per partition, one sink batch one PostgreSQL
transaction, so their rates are what the broker and the database pay for per second."""

STAGES = frozenset({"baselines", "worker", "sink", "start", "scale", "recovery", "batched",
                    "claims", "e2e"})
"""Stages that can be left out (``--skip``); the limits always run: ratios need them."""


@dataclass
class Stage:
    """One line of the table."""

    name: str
    events: int
    """Events (records) the stage handled."""
    seconds: float
    """Wall time of the stage's measured span (seconds)."""
    limit: str = ""
    """Name of the limit stage this one is compared with ('' = none)."""
    note: str = ""

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Report:
    """Everything ``streams lab bench`` measured."""

    spec: dict[str, Any]
    stages: list[Stage] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    """p50, p99, max (milliseconds) and the offered rate (events/s)."""
    latency_windows: list[dict[str, float]] = field(default_factory=list)
    """The latency stage per :data:`LATENCY_WINDOW_S` of acknowledgements: window start
    (seconds), events, p50, p99, max (milliseconds); whether latency drifts over a long run."""
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    """Peak resident memory of each process (MiB)."""
    rss_mib: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Resident memory of each process during the latency stage: (seconds, MiB) samples."""
    latency_cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds each pipeline command (its processes summed) and each server
    (:func:`server_cpu_seconds`) used over the latency stage, by name."""
    latency_steps: dict[str, dict[str, float]] = field(default_factory=dict)
    """The pipeline's timed steps over the latency stage (:data:`TIMED_STEPS`), by name: how
    many per second, their mean and bucket-estimated p50 and p99 (milliseconds), and for a
    sink's batches the mean records a batch."""
    mismatches: int = -1
    """Students whose totals differ from the loadgen expectation after the end-to-end stage."""

    def ratio(self, stage: Stage) -> float | None:
        """``stage``'s rate as a share of its limit's rate (None without a limit or without a
        figure of its own)."""
        limit = next((s for s in self.stages if s.name == stage.limit), None)
        if limit is None or limit.rate <= 0 or stage.seconds <= 0:
            return None
        return stage.rate / limit.rate

    def to_json(self) -> bytes:
        """The report for scripts (rates and ratios included)."""
        stages = [{**asdict(s), "events_per_second": round(s.rate),
                   "ratio_to_limit": self.ratio(s)} for s in self.stages]
        return orjson.dumps({**asdict(self), "stages": stages}, option=orjson.OPT_INDENT_2)


def py_spy() -> str:
    """Path of the ``py-spy`` executable (beside this interpreter, else on PATH).

    Raises:
        FileNotFoundError: not installed (``pip install py-spy``; ``make venv`` does).
    """
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise FileNotFoundError("py-spy is not installed: pip install py-spy")
    return found


def profile_summary(path: Path, top: int = 12) -> list[tuple[float, str]]:
    """The busiest functions of the main thread in a py-spy ``raw`` profile (folded stacks,
    recorded with ``--idle``): (share of its samples 0..1, "function (file:line)") by self
    time, busiest first; time waiting in the event loop's ``select`` shows as ``<idle>``."""
    from collections import Counter

    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or not frames[0].startswith("_run_module_as_main"):
            continue
        total += int(count)
        name = frames[-1]
        leaf["<idle>" if name.startswith(("EpollSelector.select", "select (")) else name] += \
            int(count)
    return [(n / total, f) for f, n in leaf.most_common(top)] if total else []


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Bench:
    """Runs the stages in order on isolated topics and schema (module docstring)."""

    def __init__(self, settings: Settings, spec: LoadSpec, workdir: Path,
                 rate: int = 2000, latency_s: float = 20.0, profile_dir: Path | None = None,
                 stages: frozenset[str] = STAGES, batch: int = 50,
                 say: Callable[[str], None] = print, workers: int = 1) -> None:
        self.scratch = Scratch(settings, "bench", workdir)
        self.base = self.scratch.base
        self.spec = spec
        self.workdir = workdir
        self.rate = rate
        self.latency_s = latency_s
        self.profile_dir = profile_dir
        self.say = say
        self.stages = stages
        self.batch = batch
        self.workers = workers
        """Fold worker processes in the worker and end-to-end stages (one consumer group)."""
        self.report = Report(spec={**asdict(spec), "partitions": settings.topic_partitions,
                                   "rate": rate, "latency_seconds": latency_s,
                                   "workers": workers})

    # ---- processes -----------------------------------------------------------------------

    @contextmanager
    def processes(self, settings: Settings, *commands: str) -> Iterator[list[PipelineProcess]]:
        """Run ``commands`` (``worker``, ``sink``, ``totals-writer``) for the block, ``worker``
        as :attr:`workers` processes (each its own table store); stop them with SIGTERM after
        it, recording their peak RSS; py-spy them with ``--profile``."""
        procs = []
        for c in commands:
            for i in range(self.workers if c == "worker" else 1):
                name = f"{c}-{i + 1}" if c == "worker" and self.workers > 1 else c
                s = settings.with_(data_dir=f"{settings.data_dir}-{i + 1}") if i else settings
                procs.append(PipelineProcess(
                    c, s, self.workdir / f"{settings.xp_topic}-{name}.log", free_port()))
        spies: list[subprocess.Popen[bytes]] = []
        try:
            for p in procs:
                p.start()
                if self.profile_dir is not None and p.proc is not None:
                    out = self.profile_dir / f"{p.log_path.stem}.folded"
                    spies.append(subprocess.Popen(
                        [py_spy(), "record", "--pid", str(p.proc.pid), "--rate", "100",
                         "--format", "raw", "--output", str(out), "--nonblocking", "--idle"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            yield procs
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            for p in procs:
                if p.proc is not None:
                    rss = memory_mib(p.proc.pid, "VmHWM")
                    key = p.command
                    self.report.peak_rss_mib[key] = max(rss, self.report.peak_rss_mib.get(key, 0))
                p.stop()

    @contextmanager
    def worker_count(self, count: int) -> Iterator[None]:
        """:attr:`workers` is ``count`` for the block (a stage of its own worker count)."""
        workers, self.workers = self.workers, count
        try:
            yield
        finally:
            self.workers = workers

    def wait(self, settings: Settings, pairs: list[tuple[str, str]],
             procs: list[PipelineProcess]) -> dict[str, tuple[float, float]]:
        """Wait until every (group, topic) has lag 0; a process that exits fails the bench."""

        def check(_: dict[str, int]) -> None:
            dead = [p.command for p in procs if not p.alive()]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited; logs in {self.workdir}")

        return asyncio.run(lag.wait_caught_up(settings, pairs, timeout_s=3600,
                                                on_progress=check, interval_s=0.2))

    def wait_data_flow(self, settings: Settings, procs: list[PipelineProcess]) -> None:
        """:meth:`wait` for the readers of the XP topic (worker, ledger sink), then for the
        readers of the totals changelog (totals writer), from :mod:`streams.topology`."""
        self.wait(settings, topology.group_topics(settings, settings.xp_topic), procs)
        self.wait(settings, topology.group_topics(settings, settings.totals_changelog_topic),
                  procs)

    # ---- stages --------------------------------------------------------------------------

    def run(self) -> Report:
        """Run every stage; the schema and topics are removed even when one fails."""
        self.scratch.setup()
        try:
            self.say(f"generating {self.spec.events:,} records ...")
            records, expected = generate(self.spec)
            shared = self.scratch.variant("main")
            self.publish(shared, records)
            self.raw_consume(shared, len(records))
            rows = ledger_rows(records, shared)
            self.copy_limit(rows)
            if "sink" in self.stages:
                self.sink_against_its_sql(shared, records, rows)
            else:
                self.add(self.staged_insert(rows, self.base.sink_batch_records))
            if "baselines" in self.stages:
                self.naive(rows[:NAIVE_EVENTS])
                self.trigger(rows[:TRIGGER_EVENTS])
            if "worker" in self.stages:
                self.add(self.alone(shared, records, "worker"))
            if "start" in self.stages:
                self.from_start(records)
            if "scale" in self.stages:
                self.scale(records)
            if "recovery" in self.stages:
                self.recovery(records)
            if "batched" in self.stages:
                self.batched(records)
            if "claims" in self.stages:
                self.claims()
            if "e2e" in self.stages:
                self.end_to_end(records, expected)
        finally:
            self.scratch.cleanup(self.say)
        return self.report

    def add(self, stage: Stage) -> None:
        """Record a stage and say its figure. A stage timed from its first commit whose first
        commit already held every event (a workload of one batch) has no figure: noted."""
        if stage.events == 0 and stage.note.startswith("first commit"):
            stage.note = "no figure: its first commit held the whole workload (use more --events)"
        self.report.stages.append(stage)
        self.say(f"  {stage.name}: {stage.events:,} events in {stage.seconds:.2f} s = "
                 f"{stage.rate:,.0f}/s")

    def publish(self, settings: Settings, records: list[Record]) -> None:
        """Limit: the producer's rate, one send per record, every ack awaited."""
        self.say("publishing ...")
        seconds = asyncio.run(publish_records(settings, records))
        self.add(Stage(PUBLISH_LIMIT, len(records), seconds))

    def raw_consume(self, settings: Settings, count: int) -> None:
        """Limit of the broker side: read every record, no group, and parse it with orjson."""

        async def consume() -> float:
            consumer = kafka.consumer(settings, None, auto_offset_reset="earliest")
            await consumer.start()
            try:
                parts = [TopicPartition(settings.xp_topic, p)
                         for p in range(settings.topic_partitions)]
                consumer.assign(parts)
                seen, started = 0, time.perf_counter()
                while seen < count:
                    batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                    for batch in batches.values():
                        for r in batch:
                            try:
                                orjson.loads(r.value or b"")
                            except orjson.JSONDecodeError:
                                pass
                        seen += len(batch)
                return time.perf_counter() - started
            finally:
                await consumer.stop()

        self.add(Stage(BROKER_LIMIT, count, asyncio.run(consume())))

    def copy_limit(self, rows: list[tuple[Any, ...]]) -> None:
        """Limit of the database side: one COPY of every ledger row into an unindexed table."""
        with connect(self.base.database_url) as conn:
            conn.execute(lab_query("create_like_ledger", table="copy_limit"))
            payload = copy_text(rows)
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(lab_query("copy_rows", table="copy_limit")) as copy:
                copy.write(payload)
            conn.commit()
            seconds = time.perf_counter() - started
            conn.execute(lab_query("drop_table", table="copy_limit"))
            conn.commit()
        self.add(Stage(DATABASE_LIMIT, len(rows), seconds))

    def sink_against_its_sql(self, settings: Settings, records: list[Record],
                             rows: list[tuple[Any, ...]]) -> None:
        """The ledger sink alone and its SQL path (:meth:`staged_insert`), each measured
        :data:`SINK_ROUNDS` times, alternately (SQL, sink, SQL, sink, ...), each round of the
        sink in a consumer group of its own; each is reported by its median round, the sink
        as a share of its SQL path's median, with every round's rate in the note."""
        sql: list[Stage] = []
        sink: list[Stage] = []
        for n in range(SINK_ROUNDS):
            sql.append(self.staged_insert(rows, self.base.sink_batch_records))
            self.say(f"  {sql[-1].name}: {sql[-1].rate:,.0f}/s ({sql[-1].note})")
            sink.append(self.alone(settings.with_(ledger_group=f"{settings.ledger_group}-{n}"),
                                   records, "sink"))
            self.say(f"  {sink[-1].name}: {sink[-1].rate:,.0f}/s ({sink[-1].note})")
        for stages in (sql, sink):
            middle = sorted(stages, key=lambda st: st.rate)[len(stages) // 2]
            middle.note += (f"; median of {len(stages)} alternating rounds: "
                            + ", ".join(f"{st.rate:,.0f}" for st in stages))
            if stages is sink:
                middle.limit = sql[0].name
            self.add(middle)

    def staged_insert(self, rows: list[tuple[Any, ...]], batch: int) -> Stage:
        """The ledger sink's own SQL without the sink: per ``batch`` rows, COPY into the staging
        table, then ``INSERT ... SELECT ... ON CONFLICT (id, student_id) DO NOTHING`` into the
        indexed ledger (query ``insert_ledger``), one transaction each (the payloads are built
        before the clock starts); the note gives the CPU seconds the bench and the servers
        used while the clock ran."""
        payloads = [copy_text(rows[i:i + batch]) for i in range(0, len(rows), batch)]
        with connect(self.base.database_url) as conn:
            servers, own = server_cpu_seconds(), time.process_time()
            started = time.perf_counter()
            for payload in payloads:
                with conn.cursor() as cur:
                    cur.execute(query("stage_ledger"))
                    with cur.copy(query("copy_ledger")) as copy:
                        copy.write(payload)
                    cur.execute(query("insert_ledger"))
                conn.commit()
            seconds = time.perf_counter() - started
            used = {"bench": time.process_time() - own, **server_cpu_since(servers)}
            conn.execute(lab_query("truncate_ledger"))
            conn.commit()
        return Stage(f"COPY to staging + INSERT ON CONFLICT, {batch:,}/tx", len(rows),
                     seconds, DATABASE_LIMIT,
                     f"the sink's SQL, no Python; CPU s in it: {cpu_note(used)}")

    def naive(self, rows: list[tuple[Any, ...]]) -> None:
        """Baseline: one INSERT and one commit per event, into a copy of the ledger table."""
        with connect(self.base.database_url) as conn:
            conn.execute(lab_query("create_like_ledger_indexed", table="naive_events"))
            conn.commit()
            sql = lab_query("insert_row", table="naive_events")
            started = time.perf_counter()
            for row in rows:
                conn.execute(sql, row)
                conn.commit()
            seconds = time.perf_counter() - started
        self.add(Stage("baseline: INSERT + commit per event", len(rows), seconds,
                       DATABASE_LIMIT))

    def trigger(self, rows: list[tuple[Any, ...]]) -> None:
        """Baseline: the replaced design's per-row trigger, 1,000 rows per transaction."""
        with connect(self.base.database_url) as conn:
            conn.execute(lab_query("trigger_baseline"))
            conn.commit()
            sql = lab_query("insert_row", table="trig_events")
            started = time.perf_counter()
            for i in range(0, len(rows), 1000):
                with conn.cursor() as cur:
                    cur.executemany(sql, rows[i:i + 1000])
                conn.commit()
            seconds = time.perf_counter() - started
        self.add(Stage("baseline: per-row trigger, 1,000/tx", len(rows), seconds,
                       DATABASE_LIMIT))

    def alone(self, settings: Settings, records: list[Record], command: str,
              label: str = "") -> Stage:
        """``command`` (``worker`` or ``sink``) alone on the published ``records``, in its own
        consumer group, from its first commit to lag 0 (:class:`CommitProgress`); the note
        gives the CPU seconds it and the servers used within that span. The sink's ledger is
        emptied after."""
        name, limit = {"worker": ("fold worker alone", BROKER_LIMIT),
                       "sink": ("ledger sink alone", DATABASE_LIMIT)}[command]
        group = topology.stage(settings, command, settings.xp_topic).group
        if command == "worker" and self.workers > 1:
            name += f" ({self.workers} processes)"
        self.say(f"{name}{label} ...")
        with self.processes(settings, command) as procs:
            progress = asyncio.run(commit_progress(
                settings, group, settings.xp_topic,
                event_index(records, settings.topic_partitions), procs))
        if command == "sink":
            with connect(self.base.database_url, autocommit=True) as conn:
                conn.execute(lab_query("truncate_sink"))
        return Stage(f"{name}{label}", progress.events, progress.seconds, limit,
                     f"first commit to lag 0; CPU s in it: {cpu_note(progress.span_cpu)}")

    def from_start(self, records: list[Record]) -> None:
        """One worker process with an existing store (it folded a warm-up workload of a tenth
        of the size on the same topic and stopped) started on the workload's backlog: timed
        from the process's start (imports, Faust's start, the group join, table recovery and
        the assignment included) to its first commit and to lag 0."""
        settings = self.scratch.variant("start")
        group = topology.stage(settings, "worker", settings.xp_topic).group
        warm, _ = generate(LoadSpec(events=max(1000, self.spec.events // 10),
                                    students=self.spec.students, seed=self.spec.seed + 1))
        self.say(f"worker from process start: warm-up of {len(warm):,} records ...")
        with self.worker_count(1):
            asyncio.run(publish_records(settings, warm))
            with self.processes(settings, "worker") as procs:
                self.wait(settings, [(group, settings.xp_topic)], procs)
            asyncio.run(publish_records(settings, records))
            self.say(f"worker from process start on a {len(records):,}-record backlog ...")
            started = time.monotonic()
            with self.processes(settings, "worker") as procs:
                progress = asyncio.run(commit_progress(
                    settings, group, settings.xp_topic,
                    event_index(warm + records, settings.topic_partitions), procs))
        events = progress.total - progress.initial
        self.add(Stage("fold worker from process start (existing store)", events,
                       progress.done_at - started, BROKER_LIMIT,
                       f"first commit {progress.first_at - started:.1f} s after the process "
                       "started"))

    def scale(self, records: list[Record]) -> None:
        """One worker process, two in one group, then two with standby replicas
        (``XP_WORKER_STANDBY_REPLICAS=1``: each keeps a warm copy of the other's tables), each
        alone on the workload (a fresh topic each), timed from the first commit to lag 0. The
        workers' CPU seconds are counted until they are idle again (a standby applies the
        changelogs after the source's lag is 0), with the CPU seconds the broker and PostgreSQL
        used meanwhile (on two cores they compete with the workers). The standbys' CPU per
        event is the difference the standby replicas make, against the active workers'.

        The span starts once every process is ready (``/readyz``: all have joined and read the
        settled assignment), not at the first commit: a second process joining later than the
        first rebalanced the group inside the span, a cost of start-up (stage ``start``) rather
        than of two processes running."""
        cpu_per_event: dict[str, float] = {}
        for name, count, standbys in (("1", 1, 0), ("2", 2, 0), ("standby", 2, 1)):
            settings = self.scratch.variant(f"scale{name}").with_(
                worker_standby_replicas=standbys)
            group = topology.stage(settings, "worker", settings.xp_topic).group
            asyncio.run(publish_records(settings, records))
            label = (f"{count} worker process{'es' if count > 1 else ''}"
                     + (", standby replicas 1" if standbys else ""))
            self.say(f"{label} ...")
            index = event_index(records, settings.topic_partitions)
            with self.worker_count(count):
                servers = server_cpu_seconds()
                with self.processes(settings, "worker") as procs:
                    progress = asyncio.run(commit_progress(
                        settings, group, settings.xp_topic, index, procs,
                        lambda: all(p.ready() for p in procs)))
                    cpu = idle_cpu_seconds([p.proc.pid for p in procs if p.proc is not None])
                used = server_cpu_since(servers)
            total = sum(ends[-1] for ends in index.values())
            cpu_per_event[name] = cpu / total if total else 0.0
            per_event = (cpu_note({k: v / progress.events * 1e6
                                   for k, v in progress.span_cpu.items()})
                         if progress.events else "none")
            note = (f"CPU us per event in the span: {per_event}; CPU s until idle: "
                    f"workers {cpu:.1f}, {cpu_note(used)}")
            if standbys and cpu_per_event["2"] > 0:
                extra = cpu_per_event[name] - cpu_per_event["2"]
                note += (f"; standby CPU per event {extra * 1e6:.0f} us = "
                         f"{extra / cpu_per_event['2']:.0%} of the active workers'")
            self.add(Stage(f"fold worker alone, {label}", progress.events, progress.seconds,
                           BROKER_LIMIT, note))

    def recovery(self, records: list[Record]) -> None:
        """One worker process (static group membership: ``XP_WORKER_INSTANCE_ID``) on a fresh
        topic; the workload is published faster than it folds, the worker is killed -9 with
        the backlog the publish left, restarted at once, and timed from the kill until lag 0.
        The bar is backlog / the worker-alone rate of this run + 10 s."""
        settings = self.scratch.variant("recovery").with_(
            worker_instance_id=f"bench-recovery-{uuid.uuid4().hex[:8]}")
        worker = topology.stage(settings, "worker", settings.xp_topic)
        pair = [(worker.group, worker.topic)]
        self.say("recovery: kill -9 of the worker under a backlog ...")
        with self.worker_count(1):
            with self.processes(settings, "worker") as procs:
                probe = str(uuid.uuid4())
                asyncio.run(publish_records(settings, [(probe.encode(), orjson.dumps({
                    "id": str(uuid.uuid4()), "student_id": probe, "kind": "typing", "delta": 0,
                    "created_at": datetime.now(UTC).isoformat()}))]))
                self.wait(settings, pair, procs)
                asyncio.run(publish_records(settings, records))
                procs[0].kill()
                killed = time.monotonic()
                backlog = asyncio.run(_records_behind(settings, *pair[0]))
                procs[0].start()
                self.wait(settings, pair, procs)
                seconds = time.monotonic() - killed
        alone = next((s for s in self.report.stages if s.name.startswith("fold worker alone")
                      and "batched" not in s.name), None)
        bar = f"; bar {backlog / alone.rate + 10:.1f} s" if alone and alone.rate else ""
        self.add(Stage(f"recovery: worker killed -9 under a {backlog:,}-record backlog, "
                       "restarted, to lag 0", backlog, seconds, "",
                       f"{seconds:.1f} s from the kill{bar}"))

    def batched(self, records: list[Record]) -> None:
        """Worker and sink alone on the same workload packed :attr:`batch` events a record."""
        packed = batch_records(records, self.batch, self.base.max_record_bytes)
        settings = self.scratch.variant("batched")
        self.say(f"publishing the workload as {len(packed):,} batched records ...")
        asyncio.run(publish_records(settings, packed))
        label = f", batched records ({self.batch} events)"
        for command in ("worker", "sink"):
            if command in self.stages:
                self.add(self.alone(settings, packed, command, label))

    def claims(self) -> None:
        """The grant stream: one worker process alone on a claim workload of about the
        workload's size (learners over 40 days, 1-3 claims on 80% of the days, zones with
        DST), the policy and a season calendar published first; claims decided per second,
        from the first commit on the claims topic to lag 0 (the same worker folds the awards
        it emits into the totals meanwhile)."""
        settings = self.scratch.variant("claims")
        claims, expected = generate_claims(max(20, self.spec.events // 64), 40, self.spec.seed)
        asyncio.run(publish_timed(settings, settings.policies_topic, [
            (b"daily_login:1", orjson.dumps(CLAIM_POLICY), CLAIM_POLICY_PUBLISHED_MS),
            (b"seasons:1", orjson.dumps(claim_calendar()), CLAIM_POLICY_PUBLISHED_MS)]))
        self.say(f"grant stream: publishing {len(claims):,} claims ...")
        asyncio.run(publish_timed(settings, settings.claims_topic, claims))
        with self.worker_count(1):
            with self.processes(settings, "worker") as procs:
                progress = asyncio.run(commit_progress(
                    settings, topology.stage(settings, "worker", settings.claims_topic).group,
                    settings.claims_topic,
                    event_index([(k, v) for k, v, _ in claims], settings.topic_partitions),
                    procs))
        self.add(Stage("grant stream alone (daily-login claims)", progress.events,
                       progress.seconds,
                       BROKER_LIMIT, f"first commit to lag 0; {expected.award_count:,} awards"))

    def end_to_end(self, records: list[Record], expected: Expected) -> None:
        """The whole pipeline on a fresh topic: publish while worker, sink and totals writer
        run; from the first publish until all three have lag 0; then the latency stage."""
        self.say("end to end ...")
        settings = self.scratch.variant("e2e")
        with self.processes(settings, "worker", "sink", "totals-writer") as procs:
            self.wait_joined(settings, procs)
            started = time.monotonic()
            asyncio.run(publish_records(settings, records))
            self.wait_data_flow(settings, procs)
            seconds = time.monotonic() - started
            outcome = read_outcome(settings, expected)
            self.report.mismatches = len(outcome.expected_vs_totals)
            workers = f"{self.workers} workers" if self.workers > 1 else "worker"
            self.add(Stage(f"end to end ({workers} + sink + totals writer)", len(records), seconds,
                           BROKER_LIMIT, f"students mismatched: {self.report.mismatches}, "
                           f"ledger vs totals: {len(outcome.ledger_vs_totals)}"))
            self.latency(settings, procs)

    def wait_joined(self, settings: Settings, procs: list[PipelineProcess]) -> None:
        """Publish one probe record and wait until every group has consumed it: the groups
        have joined, so the end-to-end span does not include start-up."""
        probe_student = str(uuid.uuid4())
        probe = orjson.dumps({"id": str(uuid.uuid4()), "student_id": probe_student,
                              "kind": "typing", "delta": 0,
                              "created_at": datetime.now(UTC).isoformat()})
        asyncio.run(publish_records(settings, [(probe_student.encode(), probe)]))
        self.wait_data_flow(settings, procs)
        with connect(self.base.database_url, autocommit=True) as conn:
            conn.execute(lab_query("delete_probe"), {"student": probe_student})

    def latency(self, settings: Settings, procs: list[PipelineProcess]) -> None:
        """Offer events of ``--students`` fresh students at :attr:`rate` events/s; per event,
        publish ack -> first ``xp_totals`` poll showing it (module docstring); RSS of each
        process over it."""
        self.say(f"latency at {self.rate:,} events/s for {self.latency_s:.0f} s ...")
        servers, before = server_cpu_seconds(), commands_cpu_seconds(procs)
        metrics_before = {id(p): p.metrics() for p in procs}
        started = time.monotonic()
        seen = asyncio.run(offer(settings, self.rate, self.latency_s, self.spec.students, procs))
        after = commands_cpu_seconds(procs)
        self.report.latency_steps = timed_steps(
            procs, metrics_before, {id(p): p.metrics() for p in procs},
            time.monotonic() - started)
        self.report.latency_cpu_s = {k: round(v - before.get(k, 0.0), 2)
                                     for k, v in after.items()}
        self.report.latency_cpu_s.update(
            {k: round(v, 2) for k, v in server_cpu_since(servers).items()})
        samples = [seen.applied[i] - seen.acks[i] for i in seen.acks if i in seen.applied]
        to_fold = [seen.folded[i] - seen.acks[i] for i in seen.folded]
        after_fold = [seen.applied[i] - seen.folded[i] for i in seen.folded]
        self.report.latency_windows = latency_windows(seen)
        if samples:
            self.report.latency_ms = {
                "offered_per_second": self.rate, "events": len(samples),
                "p50": round(statistics.median(samples) * 1000, 1),
                "p99": round(percentile(samples, 0.99) * 1000, 1),
                "max": round(max(samples) * 1000, 1),
                "not_applied": len(seen.acks) - len(samples),
            }
        if to_fold:
            self.report.latency_ms.update({
                "split_events": len(to_fold),
                "to_fold_p50": round(statistics.median(to_fold) * 1000, 1),
                "to_fold_p99": round(percentile(to_fold, 0.99) * 1000, 1),
                "after_fold_p50": round(statistics.median(after_fold) * 1000, 1),
                "after_fold_p99": round(percentile(after_fold, 0.99) * 1000, 1),
            })
        self.report.rss_mib = seen.rss_mib


def timed_steps(procs: list[PipelineProcess], before: dict[int, list[Sample]],
                after: dict[int, list[Sample]], seconds: float) -> dict[str, dict[str, float]]:
    """:data:`TIMED_STEPS` of ``procs`` between two reads of their ``/metrics`` (``before``
    and ``after``, by ``id`` of the process) ``seconds`` apart: per step, ``per_second``,
    ``mean_ms``, ``p50_ms`` and ``p99_ms`` (estimated from the histogram's buckets the way
    Prometheus's ``histogram_quantile`` does) and ``records_per_batch`` (records per sink
    batch or worker checkpoint). The processes of one command are summed; a step with no
    observations is left out."""
    out: dict[str, dict[str, float]] = {}
    for command, (step, timed, sized) in TIMED_STEPS.items():
        mine = [p for p in procs if p.command == command]
        if not mine:
            continue
        count, total, buckets = sum_histograms(
            histogram_delta(before[id(p)], after[id(p)], timed) for p in mine)
        if count <= 0:
            continue
        out[step] = {"per_second": round(count / seconds, 2),
                     "mean_ms": round(total / count * 1000, 1),
                     "p50_ms": round(bucket_quantile(buckets, count, 0.5) * 1000, 1),
                     "p99_ms": round(bucket_quantile(buckets, count, 0.99) * 1000, 1)}
        if sized:
            n, records, _ = sum_histograms(histogram_delta(before[id(p)], after[id(p)], sized)
                                           for p in mine)
            out[step]["records_per_batch"] = round(records / n, 1) if n else 0.0
    return out


Histogram = tuple[float, float, dict[float, float]]
"""One histogram's observations: count, sum and cumulative count by upper bound (``le``)."""


def histogram_delta(before: list[Sample], after: list[Sample], name: str) -> Histogram:
    """What the histogram ``name`` (every label set summed) observed between two reads."""

    def read(samples: list[Sample]) -> Histogram:
        count = sum(s.value for s in samples if s.name == f"{name}_count")
        total = sum(s.value for s in samples if s.name == f"{name}_sum")
        buckets: dict[float, float] = {}
        for s in samples:
            if s.name == f"{name}_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
        return count, total, buckets

    c0, s0, b0 = read(before)
    c1, s1, b1 = read(after)
    return c1 - c0, s1 - s0, {le: v - b0.get(le, 0.0) for le, v in b1.items()}


def sum_histograms(histograms: Iterable[Histogram]) -> Histogram:
    """Histograms of the same buckets added up."""
    count, total = 0.0, 0.0
    buckets: dict[float, float] = {}
    for c, s, b in histograms:
        count, total = count + c, total + s
        for le, v in b.items():
            buckets[le] = buckets.get(le, 0.0) + v
    return count, total, buckets


def bucket_quantile(buckets: dict[float, float], count: float, q: float) -> float:
    """The ``q`` quantile of observations given as cumulative ``buckets`` (seconds), linearly
    interpolated inside its bucket as Prometheus's ``histogram_quantile`` does; the largest
    finite bound when it falls in the ``+Inf`` bucket."""
    rank, lower, below = q * count, 0.0, 0.0
    finite = sorted(le for le in buckets if le != float("inf"))
    for le in finite:
        if buckets[le] >= rank:
            inside = buckets[le] - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, buckets[le]
    return finite[-1] if finite else 0.0


def latency_windows(seen: Offered) -> list[dict[str, float]]:
    """``seen``'s applied events grouped by acknowledgement time into windows of
    :data:`LATENCY_WINDOW_S` (seconds from the stage's start): start, events, p50, p99 and max
    (milliseconds). Only for stages of at least two windows (else an empty list)."""
    acks = [(t, seen.applied[i] - t) for i, t in seen.acks.items() if i in seen.applied]
    if not acks or max(t for t, _ in acks) - seen.started < 2 * LATENCY_WINDOW_S:
        return []
    windows: dict[int, list[float]] = {}
    for t, lat in acks:
        windows.setdefault(int((t - seen.started) // LATENCY_WINDOW_S), []).append(lat)
    return [{"start_s": w * LATENCY_WINDOW_S, "events": len(v),
             "p50": round(statistics.median(v) * 1000, 1),
             "p99": round(percentile(v, 0.99) * 1000, 1), "max": round(max(v) * 1000, 1)}
            for w, v in sorted(windows.items())]


async def _records_behind(settings: Settings, group: str, topic: str) -> int:
    """Records ``group`` has not committed on ``topic`` (all partitions)."""
    async with kafka.OffsetReader(settings) as reader:
        return sum(x.lag_records for x in await lag.read_lag(reader, group, topic))


class CommitProgress(NamedTuple):
    """What :func:`commit_progress` saw: events committed when it began, the first commit past
    them, every event committed (monotonic seconds)."""

    total: int
    """Events in every record of the topic."""
    initial: int
    """Events already committed at the first poll."""
    first_at: float
    first_events: int
    """Events committed at the first commit seen past :attr:`initial`."""
    done_at: float
    span_cpu: dict[str, float]
    """CPU seconds used from :attr:`first_at` to :attr:`done_at` by the processes (summed by
    pipeline command, :func:`commands_cpu_seconds`) and the servers
    (:func:`server_cpu_seconds`): the span's own cost, without start-up or idle time."""

    @property
    def events(self) -> int:
        """Events committed within the span (after the first commit seen; 0 when that commit
        held every record). Counting from the first commit leaves out joining the group and
        the first batch's start."""
        return self.total - self.first_events

    @property
    def seconds(self) -> float:
        """The span: first commit seen (or ``start_when``) to every event committed."""
        return self.done_at - self.first_at


async def commit_progress(settings: Settings, group: str, topic: str,
                          events_before: EventIndex, procs: list[PipelineProcess],
                          start_when: Callable[[], bool] | None = None) -> CommitProgress:
    """Poll ``group``'s committed offsets on ``topic`` (every 0.1 s) until every record is
    committed: when the first commit past the offsets committed at the first poll was seen
    (or, with ``start_when``, the first poll at which it returned True), and when the last.

    Args:
        events_before: per partition, the events in the records before each offset (see
            :func:`event_index`): records of a batched workload carry several events.
        start_when: where the span starts instead of the first commit (e.g. every process
            ready: a group that has settled).

    Raises:
        RuntimeError: a process of ``procs`` exited.
    """
    total = sum(ends[-1] for ends in events_before.values())
    initial: int | None = None
    first: tuple[float, int] | None = None
    cpu_at_first: dict[str, float] = {}
    async with kafka.OffsetReader(settings) as reader:
        while True:
            committed = await reader.committed(group, topic)
            done = sum(events_before[p][min(o or 0, len(events_before[p]) - 1)]
                       for p, o in committed.items() if p in events_before)
            now = time.monotonic()
            if initial is None:
                initial = 0 if done >= total else done
            if first is None and (done > initial if start_when is None else start_when()):
                first = (now, done)
                cpu_at_first = cpu_of(procs)
            if first is not None and done >= total:
                used = {k: round(v - cpu_at_first.get(k, 0.0), 2)
                        for k, v in cpu_of(procs).items()}
                return CommitProgress(total, initial, first[0], first[1], now, used)
            if any(not p.alive() for p in procs):
                raise RuntimeError(f"{', '.join(p.command for p in procs)} exited: see its log")
            await asyncio.sleep(0.1)




def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds process ``pid`` has used (``/proc/<pid>/stat``), with
    ``children`` also those of its children that have exited and been waited for; 0.0 when
    unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def commands_cpu_seconds(procs: list[PipelineProcess]) -> dict[str, float]:
    """CPU seconds used so far by the running ``procs``, summed by pipeline command."""
    used: dict[str, float] = {}
    for p in procs:
        if p.proc is not None:
            used[p.command] = used.get(p.command, 0.0) + cpu_seconds(p.proc.pid)
    return used


def cpu_of(procs: list[PipelineProcess]) -> dict[str, float]:
    """CPU seconds used so far by ``procs`` (by command) and the servers, in one mapping."""
    return {**commands_cpu_seconds(procs), **server_cpu_seconds()}


def idle_cpu_seconds(pids: list[int], quiet_s: float = 2.0, limit_s: float = 60.0) -> float:
    """CPU seconds ``pids`` used in all, read once they have used under 5% of a core over
    ``quiet_s`` seconds (polled; at most ``limit_s`` seconds)."""
    deadline = time.monotonic() + limit_s
    last = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last < 0.05 * quiet_s:
            return now
        last = now
    return last


def server_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the broker (``kafka``: java processes) and ``postgresql``
    processes on this machine, by name (the local stack's servers). A server's children that
    have exited count in their parent's figure: a PostgreSQL backend whose connection closed
    between two readings would otherwise take its CPU out of the difference."""
    used: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = stat.read_text().strip()
        except OSError:
            continue
        kind = "kafka" if name == "java" else "postgresql" if name.startswith("postgres") \
            else None
        if kind is not None:
            used[kind] = used.get(kind, 0.0) + cpu_seconds(int(stat.parent.name), children=True)
    return used


def server_cpu_since(before: dict[str, float]) -> dict[str, float]:
    """The servers' CPU seconds used since ``before`` (:func:`server_cpu_seconds`), by name."""
    return {k: v - before.get(k, 0.0) for k, v in server_cpu_seconds().items()}


def cpu_note(used: dict[str, float]) -> str:
    """CPU seconds by name as ``kafka 0.4, postgresql 2.9`` (sorted by name)."""
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(used.items()))


EventIndex = dict[int, list[int]]
"""partition -> events in the records before offset o, for o = 0 .. records on it."""


def event_index(records: list[Record], partitions: int) -> EventIndex:
    """The :data:`EventIndex` of ``records`` as published in order (offsets start at 0): a
    batched record counts its events, any other record one."""
    index: EventIndex = {p: [0] for p in range(partitions)}
    for key, value in records:
        p = partition_for(key, partitions) if key is not None else 0
        n = value.count(b'"id"') if value[:1] == b"[" else 1
        index[p].append(index[p][-1] + n)
    return index


def ledger_rows(records: list[Record], settings: Settings) -> list[tuple[Any, ...]]:
    """The ledger rows of the workload's valid records, each id once (as the sink writes)."""
    rows: dict[str, tuple[Any, ...]] = {}
    for offset, (key, value) in enumerate(records):
        try:
            ev = decode_xp(key, value, settings.max_record_bytes)
        except InvalidEvent:
            continue
        partition = partition_for(key or b"", settings.topic_partitions)
        rows.setdefault(ev.id, ledger_row(ev, settings.xp_topic, partition, offset, 0, None))
    return list(rows.values())


def copy_text(rows: list[tuple[Any, ...]]) -> bytes:
    """``rows`` in COPY's text format (tab-separated, ``\\N`` for NULL, escaped)."""
    out = io.StringIO()
    for row in rows:
        fields = []
        for v in row:
            if v is None:
                fields.append("\\N")
            elif isinstance(v, bytes):
                fields.append("\\\\x" + v.hex())
            elif isinstance(v, datetime):
                fields.append(v.isoformat())
            else:
                fields.append(str(v).replace("\\", "\\\\").replace("\t", "\\t")
                              .replace("\n", "\\n"))
        out.write("\t".join(fields))
        out.write("\n")
    return out.getvalue().encode()


@dataclass
class Offered:
    """What :func:`offer` observed."""

    acks: dict[int, float] = field(default_factory=dict)
    """event index -> monotonic time of its publish acknowledgement."""
    applied: dict[int, float] = field(default_factory=dict)
    """event index -> monotonic time of the first ``xp_totals`` poll that showed it."""
    folded: dict[int, float] = field(default_factory=dict)
    """event index -> monotonic time the worker folded it (``xp_totals.updated_at``, a wall
    clock on this machine), for the events whose first poll showed their own version (a poll
    that showed a later one has the later event's fold time)."""
    rss_mib: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """process -> (seconds since the start, resident memory in MiB), every ``RSS_EVERY_S``."""
    started: float = 0.0
    """monotonic time of the stage's first publish."""


RSS_EVERY_S = 5.0
"""How often the latency stage samples each process's resident memory (seconds)."""

LATENCY_WINDOW_S = 60.0
"""Width of the latency stage's windows in the report (seconds of acknowledgements)."""


async def offer(settings: Settings, rate: int, seconds: float, students: int,
                procs: list[PipelineProcess]) -> Offered:
    """Publish events of ``students`` fresh students in turn at ``rate``/s for ``seconds``
    (event i is the (i // students + 1)-th of student i % students); poll ``xp_totals`` every
    ``POLL_S`` for students with events not yet seen (an event is applied once its student's
    ``version`` reaches its number); sample each process's RSS.

    Raises:
        RuntimeError: a pipeline process exited meanwhile.
    """
    from psycopg import AsyncConnection

    total = int(rate * seconds)
    pool = [str(uuid.uuid4()) for _ in range(min(students, total))]
    seen = Offered()
    # student -> its acknowledged events not yet seen applied, oldest first; students in the
    # order their oldest pending event was acknowledged
    pending: dict[str, list[int]] = {}
    producer = kafka.producer(settings)
    await producer.start()
    stop = asyncio.Event()
    started = seen.started = time.monotonic()
    wall_offset = time.time() - started
    deadline = started + seconds + 30

    def acked(i: int) -> None:
        seen.acks[i] = time.monotonic()
        pending.setdefault(pool[i % len(pool)], []).append(i)

    async def poll() -> None:
        # The oldest POLL_CHUNK pending students per poll: the poll's own cost on PostgreSQL
        # stays bounded when the pipeline falls behind (else it would add to the backlog).
        async with await AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            while not stop.is_set() or (pending and time.monotonic() < deadline):
                if pending:
                    chunk = list(itertools.islice(pending, POLL_CHUNK))
                    cur = await conn.execute(lab_query("totals_versions"), (chunk,))
                    now = time.monotonic()
                    for sid, version, updated in await cur.fetchall():
                        waiting = pending.pop(sid, [])
                        for i in waiting:
                            if i // len(pool) < version and i not in seen.applied:
                                seen.applied[i] = now
                                if i // len(pool) + 1 == version:
                                    seen.folded[i] = updated - wall_offset
                        rest = [i for i in waiting if i not in seen.applied]
                        if rest:
                            pending[sid] = rest  # goes to the back of the queue
                await asyncio.sleep(POLL_S)

    async def sample() -> None:
        while not stop.is_set():
            for p in procs:
                if p.proc is not None:
                    seen.rss_mib.setdefault(p.command, []).append(
                        (round(time.monotonic() - started, 1), round(memory_mib(p.proc.pid), 1)))
            await asyncio.sleep(RSS_EVERY_S)

    tasks = [asyncio.create_task(poll()), asyncio.create_task(sample())]
    try:
        for i in range(total):
            delay = started + i / rate - time.monotonic()
            if delay > 0.005:
                await asyncio.sleep(delay)
            sid = pool[i % len(pool)]
            value = orjson.dumps({"id": str(uuid.uuid4()), "student_id": sid, "kind": "quiz",
                                  "delta": 10, "created_at": datetime.now(UTC).isoformat()})
            fut = await producer.send(settings.xp_topic, value, key=sid.encode())
            fut.add_done_callback(lambda f, i=i: acked(i))
            if i % 1000 == 0 and any(not p.alive() for p in procs):
                raise RuntimeError("a pipeline process exited during the latency stage")
        await producer.flush()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()
    return seen


def run_local(run: Callable[[Settings], Report], settings: Settings) -> Report:
    """Run ``run`` on a throwaway local stack (Apache Kafka + PostgreSQL) with ``settings``
    pointed at it (:meth:`streams.dev.stack.LocalStack.start`): the pipeline processes keep
    their other values, so a tuning setting in the environment is what they run with."""
    from streams.dev.stack import LocalStack, default_base_dir

    stack = LocalStack(default_base_dir(), settings=settings)
    try:
        return run(stack.start())
    finally:
        stack.stop()


def rss_drift(series: list[tuple[float, float]]) -> tuple[tuple[float, float],
                                                          tuple[float, float]] | None:
    """(first sample after the first minute or the first quarter, last sample) of an RSS
    series: warm-up (imports, table recovery, first batches) left out. None when too short."""
    if len(series) < 3 or series[0][1] <= 0:
        return None
    warm = min(60.0, series[-1][0] / 4)
    start = next(s for s in series if s[0] >= warm)
    return start, series[-1]


def render(report: Report) -> Any:
    """The report as a rich table (stage, events, seconds, events/s, share of its limit)."""
    from rich.table import Table

    spec = report.spec
    table = Table(title=f"streams lab bench: {spec['events']:,} records, {spec['students']:,} "
                        f"students, {spec['partitions']} partitions")
    for col in ("stage", "events", "seconds", "events/s", "of limit", "note"):
        table.add_column(col, justify="left" if col in ("stage", "note") else "right")
    for s in report.stages:
        ratio = report.ratio(s)
        table.add_row(s.name, f"{s.events:,}", f"{s.seconds:.2f}", f"{s.rate:,.0f}",
                      "limit" if s.name in LIMITS else f"{ratio:.1%}" if ratio is not None else "",
                      s.note)
    lat = report.latency_ms
    if lat:
        table.add_row(f"latency at {lat['offered_per_second']:,}/s offered, ack -> totals",
                      f"{lat['events']:,}", "", "", "",
                      f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} "
                      f"ms (poll {POLL_S * 1000:.0f} ms), not applied {lat['not_applied']}")
        if "split_events" in lat:
            table.add_row("  ack -> worker fold | fold -> totals poll",
                          f"{lat['split_events']:,.0f}", "", "", "",
                          f"p50 {lat['to_fold_p50']:.0f} | {lat['after_fold_p50']:.0f} ms, "
                          f"p99 {lat['to_fold_p99']:.0f} | {lat['after_fold_p99']:.0f} ms")
        if report.latency_cpu_s:
            table.add_row("  CPU s over the latency stage", "", "", "", "",
                          cpu_note(report.latency_cpu_s))
        for step, t in report.latency_steps.items():
            size = (f", {t['records_per_batch']:,.0f} records a batch"
                    if "records_per_batch" in t else "")
            table.add_row(f"  {step}", "", "", f"{t['per_second']:,.1f}/s", "",
                          f"mean {t['mean_ms']:.0f} ms, p50 ~{t['p50_ms']:.0f} ms, "
                          f"p99 ~{t['p99_ms']:.0f} ms{size}")
    for w in report.latency_windows:
        table.add_row(f"  acknowledged {w['start_s']:.0f}-{w['start_s'] + LATENCY_WINDOW_S:.0f} s",
                      f"{w['events']:,.0f}", "", "", "",
                      f"p50 {w['p50']:.0f} ms, p99 {w['p99']:.0f} ms, max {w['max']:.0f} ms")
    for proc, mib in sorted(report.peak_rss_mib.items()):
        table.add_row(f"peak RSS: {proc}", "", "", "", "", f"{mib:,.0f} MiB")
    for proc, series in sorted(report.rss_mib.items()):
        drift = rss_drift(series)
        if drift is not None:
            (t0, m0), (t1, m1) = drift
            table.add_row(f"RSS at a steady rate: {proc}", "", "", "", "",
                          f"{m0:,.0f} MiB at {t0:.0f} s -> {m1:,.0f} MiB at {t1:.0f} s "
                          f"({(m1 - m0) / m0:+.1%})")
    return table


def default_workdir() -> Path:
    """A fresh directory for the bench's logs and the worker's table store."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="xp-bench-"))

