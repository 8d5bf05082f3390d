"""``streams lab chaos``: the pipeline's promise checked under faults (docs/design.md, Guarantees).

A loadgen workload (duplicates, conflicts and invalid records included) is published at a
steady rate to the real pipeline (``--workers`` fold workers in one consumer group, the ledger
sink, the totals writer, each its own process) while a seeded schedule applies faults, one
every ``--fault-interval`` seconds (the schedule cycles through the faults in a seeded order):

- ``kill-worker``, ``kill-sink``, ``kill-totals-writer``: kill -9 at a random moment, restart
  after a random pause (guarantee 4);
- ``kill-in-commit``: kill -9 of the ledger sink while PostgreSQL runs its write
  (``pg_stat_activity`` shows it active); ``kill-in-rebalance``: a worker joins the group and
  another is killed while the group rebalances (guarantees 4, 9);
- ``worker-lost``: a worker killed for good (its partitions move), a new one added later (9);
- ``pause-worker``: a worker stopped (SIGSTOP) for twice the session timeout, then continued
  (SIGCONT): a zombie, whose partitions have moved meanwhile; it must write nothing more for
  them (fenced: it exits 70 and, as a supervisor would, the run starts it again) (4);
- ``pg-outage``: PostgreSQL stopped for ``--outage-seconds`` then started (local stack only;
  guarantee 6), with each process's peak RSS over the outage (backpressure);
  ``pg-terminate``: every client connection terminated while a write runs (6);
- ``duplicate-storm``: 1,000 already published valid records resent ``--storm-repeats`` times
  (guarantee 2); ``poison-burst``: ``--poison`` hostile XP records the pipeline must
  dead-letter, drawn from ``streams lab hostile``'s generators (:func:`streams.lab.hostile.poison`:
  random bytes, deep JSON, numbers past 2^63, dates at the calendar's ends, bad keys, wrong
  partitions, junk headers, values at the size limit...), each with its expected reason (5);
- ``claim-storm``: 100 new learners each claim their daily login 5 times at one instant (one
  claim id sent by 3 producers, another id twice), and a worker is killed -9 half way: each
  learner must get exactly one award (one ledger row, total = the award's XP);
- ``broker-restart`` (not in the default list): the broker restarted: every node of a local
  Apache Kafka killed -9 and started again on its log dirs, or ``--broker-restart-command``. A
  broker that comes back without the records it acknowledged ends the run as "broker limit":
  the check would blame the pipeline;
- ``broker-kill`` (not in the default list; a local 3-node Apache Kafka, ``XP_LOCAL_BROKER=
  kafka-3``): one node killed -9 under load and restarted after a pause; the other two keep
  the quorum and, with ``min.insync.replicas`` 2, every partition writable;
- ``coordinator-cut`` (in the default list, run where the broker allows: a local 3-node
  Apache Kafka, whose ``worker-1`` reaches the nodes through cuttable proxies,
  :mod:`streams.dev.netcut`): ``worker-1``'s path to its group coordinator's node is cut for
  twice the session timeout while it reaches the other nodes, then healed; the group evicts
  it, its partitions move, and it must write nothing more for them (4).

Then it waits until the groups have lag 0, checks guarantees 1-3, 5, 7 against the loadgen's
expectation (:func:`streams.lab.outcome.read_outcome`: ledger rows, totals per student incl.
games played and last game type, DLQ by reason) and prints a report: faults applied with the
time to catch up after each (the worker and ledger groups past the topic's end as it was when
the fault ended), events expected, ledger rows, duplicates dropped, DLQ records, students
mismatched, the longest stall (a group with lag whose committed offsets did not move), peak RSS,
and ends with the changelog audit (:mod:`streams.audit.changelogs`: the totals recovered from
their changelog as a worker with an empty store would, against the ledger's fold).
``--duration`` makes it a soak: workloads are published one after another until that time.
Everything lives in its own schema and topics (:class:`streams.dev.scratch.Scratch`).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams import kafka, lag, topics, topology
from streams.audit.changelogs import audit_changelogs
from streams.db.connect import connect
from streams.dev.kafka_cluster import KafkaCluster
from streams.dev.procs import free_port, memory_mib
from streams.dev.scratch import Scratch
from streams.dev.stack import LocalStack, PipelineProcess
from streams.errors import InvalidEvent
from streams.events import decode_record
from streams.lab import hostile
from streams.lab.loadgen import (
    CLAIM_POLICY,
    CLAIM_POLICY_PUBLISHED_MS,
    CLAIM_ZONES,
    Expected,
    LoadSpec,
    Record,
    TimedRecord,
    batch_records,
    generate,
    publish_timed,
)
from streams.lab.outcome import read_outcome
from streams.lab.queries import lab_query
from streams.publish import Publisher
from streams.settings import Settings

FAULTS = ("kill-worker", "kill-sink", "kill-totals-writer", "kill-in-commit",
          "kill-in-rebalance", "worker-lost", "pause-worker", "coordinator-cut", "pg-outage",
          "pg-terminate", "duplicate-storm", "poison-burst", "claim-storm", "broker-restart",
          "broker-kill")
"""Every fault the runner knows, by name."""

BROKER_FAULTS = ("broker-restart", "broker-kill")
"""Faults of the broker itself: opt-in (``--faults``), for a durable broker."""

DEFAULT_FAULTS = tuple(f for f in FAULTS if f not in BROKER_FAULTS)
"""The default schedule: all but the broker faults (opt-in: they cost a run minutes of broker
start-up, and ``broker-kill`` needs three nodes)."""

CUT_WORKER = "worker-1"
"""The worker that reaches a proxied local cluster through its proxies (coordinator-cut)."""

STORM_RECORDS = 1_000
"""Distinct records a duplicate storm resends."""

CLAIM_STORM_LEARNERS = 100
"""Learners of one claim storm (each claims 5 times at the same instant)."""

STORM_POOL = 100_000
"""The storm picks its records among this many of the latest published ones."""

CATCH_UP_TIMEOUT_S = 900.0
"""Longest wait for lag 0 after the last fault (seconds)."""


class BrokerLostRecords(RuntimeError):
    """The broker came back from a restart without records it had acknowledged."""


@dataclass
class Fault:
    """One fault applied: when (seconds since the start), how long it took, what it did."""

    name: str
    at_s: float
    took_s: float = 0.0
    detail: str = ""
    catch_up_s: float | None = None
    """Seconds from the fault's end until the worker and ledger groups passed the topic's end
    offsets as they were then; None: not reached."""
    target: dict[int, int] = field(default_factory=dict, repr=False)


@dataclass
class ChaosReport:
    """What a chaos run did and found (printed as a table, ``--json`` for scripts)."""

    spec: dict[str, Any] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    records_published: int = 0
    events_expected: int = 0
    """Valid distinct events the ledger must hold (the loadgen's expectation)."""
    ledger_rows: int = 0
    duplicates_dropped: int = 0
    """Duplicate and conflicting records published (each must count 0 times)."""
    dlq_records: int = 0
    dlq_expected: int = 0
    students_mismatched: int = 0
    changelog_differences: int | None = None
    """Keys of the worker's tables, recovered from their changelogs, that differ from the
    ledgers (:mod:`streams.audit.changelogs`; None: the audit did not run)."""
    problems: list[str] = field(default_factory=list)
    longest_stall_s: float = 0.0
    longest_stall_group: str = ""
    longest_stall_at_s: float = 0.0
    """When that stall began (seconds since the start; compare with the faults' times)."""
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    outage_peak_rss_mib: dict[str, float] = field(default_factory=dict)
    """Peak RSS of each process while PostgreSQL was down (MiB)."""
    rss_before_outage_mib: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    catch_up_after_last_s: float = 0.0
    broker_limit: str | None = None

    @property
    def ok(self) -> bool:
        """Every checked guarantee held (and the broker kept what it acknowledged)."""
        return not self.problems and self.broker_limit is None and self.students_mismatched == 0

    def to_json(self) -> bytes:
        """The report as JSON."""
        return orjson.dumps({**asdict(self), "ok": self.ok},
                            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


def merge(into: Expected, more: Expected) -> None:
    """Add the expectation of another workload (its own students and event ids) to ``into``."""
    into.records += more.records
    into.valid_unique += more.valid_unique
    into.duplicates += more.duplicates
    into.conflicts += more.conflicts
    for reason, n in more.invalid.items():
        into.invalid[reason] = into.invalid.get(reason, 0) + n
    into.students.update(more.students)


class Chaos:
    """One chaos run (module docstring). ``run()`` returns the report.

    Args:
        settings: broker, database and partitions to run against.
        spec: the workload of one round (``--duration`` publishes more rounds, new seeds).
        workdir: logs and table stores of the processes.
        faults: names from :data:`FAULTS`, applied in a seeded order, cycling.
        interval_s: seconds between faults (jittered +-25%).
        workers: fold worker processes in the group at the start.
        rate: records published per second.
        duration_s: soak time; None: one workload, faults until it is published.
        stack: the local stack, for ``pg-outage`` and ``broker-restart`` (else unavailable).
        batch: events per record (1: single-event records; >1: batched records).
    """

    def __init__(self, settings: Settings, spec: LoadSpec, workdir: Path,
                 faults: tuple[str, ...] = DEFAULT_FAULTS, interval_s: float = 20.0,
                 workers: int = 2, rate: int = 3000, duration_s: float | None = None,
                 outage_s: float = 30.0, storm_repeats: int = 100, poison: int = 2000,
                 stack: LocalStack | None = None, batch: int = 1,
                 broker_restart_command: str | None = None,
                 say: Callable[[str], None] = print) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}")
        self.scratch = Scratch(settings, "chaos", workdir)
        self.spec = spec
        self.workdir = workdir
        self.faults = faults
        self.interval_s = interval_s
        self.rate = rate
        self.duration_s = duration_s
        self.outage_s = outage_s
        self.storm_repeats = storm_repeats
        self.poison = poison
        self.stack = stack
        self.batch = batch
        self.broker_restart_command = broker_restart_command
        self.say = say
        self.rng = random.Random(spec.seed)  # noqa: S311 - a reproducible schedule, not a secret
        self.settings = self.scratch.base
        self.expected = Expected()
        self.published: deque[Record] = deque(maxlen=STORM_POOL)
        """The latest published records (the duplicate storm picks from them; bounded, so a
        long soak does not hold every record in memory)."""
        self.lock = threading.Lock()
        self.procs: dict[str, PipelineProcess] = {}
        self.lost: set[str] = set()
        self._workers = 0
        self.initial_workers = workers
        self.report = ChaosReport(spec={
            **{k: v for k, v in asdict(spec).items() if k != "max_record_bytes"},
            "partitions": settings.topic_partitions, "workers": workers, "rate": rate,
            "batch": batch, "fault_interval_s": interval_s, "faults": list(faults),
            "duration_s": duration_s, "outage_s": outage_s})
        self.started = time.monotonic()
        self.stop_monitor = threading.Event()
        self.schedule_done = threading.Event()
        self.round_events = spec.events
        self.in_outage = threading.Event()

    # ---- processes ------------------------------------------------------------------------

    def add_process(self, name: str, command: str) -> PipelineProcess:
        """Start pipeline process ``name`` (``streams <command>``) with its own table store;
        ``worker-1`` reaches a proxied local cluster through its proxies (coordinator-cut)."""
        settings = self.settings.with_(data_dir=str(self.workdir / name))
        cluster = self._proxied()
        if name == CUT_WORKER and cluster is not None:
            settings = settings.with_(kafka_bootstrap_servers=cluster.bootstrap_for("PROXIED"))
        proc = PipelineProcess(command, settings, self.workdir / f"{name}.log", free_port())
        self.procs[name] = proc
        proc.start()
        return proc

    def add_worker(self) -> str:
        """Start one more fold worker in the group; return its name."""
        self._workers += 1
        name = f"worker-{self._workers}"
        self.add_process(name, "worker")
        return name

    def live(self, prefix: str) -> list[str]:
        """Names of the running processes whose name starts with ``prefix``."""
        return [n for n, p in self.procs.items() if n.startswith(prefix) and n not in self.lost]

    def check_alive(self) -> None:
        """Raise when a process exited that no fault stopped (a crash is a finding)."""
        dead = [n for n, p in self.procs.items() if n not in self.lost and not p.alive()]
        if dead:
            tails = "".join(
                f"\n--- last lines of {n}.log ---\n" + "\n".join(
                    self.procs[n].log_path.read_text(errors="replace").splitlines()[-15:])
                for n in dead if self.procs[n].log_path.exists())
            raise RuntimeError(f"{', '.join(dead)} exited by itself; logs in {self.workdir}"
                               + tails)

    # ---- workload --------------------------------------------------------------------------

    def workload(self, round_: int) -> list[Record]:
        """The records of one round and its expectation merged into :attr:`expected`."""
        events = self.spec.events if round_ == 0 else self.round_events
        spec = LoadSpec(**{**asdict(self.spec), "seed": self.spec.seed + round_,
                           "events": events})
        records, expected = generate(spec)
        if self.batch > 1:
            records = batch_records(records, self.batch, spec.max_record_bytes)
        with self.lock:
            merge(self.expected, expected)
        return records

    async def publish_paced(self, records: list[Record]) -> None:
        """Publish ``records`` at :attr:`rate` records/s (acks awaited every second's worth)."""
        chunk = max(1, self.rate // 10)
        async with Publisher(self.settings) as pub:
            next_at = time.monotonic()
            for i in range(0, len(records), chunk):
                part = records[i:i + chunk]
                await pub.send_records(part)
                with self.lock:
                    self.published.extend(part)
                    self.report.records_published += len(part)
                next_at += len(part) / self.rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def publish_now(self, records: list[Record]) -> None:
        """Publish ``records`` at once (not paced) and wait for every acknowledgement."""
        async def send() -> None:
            async with Publisher(self.settings) as pub:
                await pub.send_records(records)
        asyncio.run(send())

    def publisher(self, done: threading.Event, errors: list[BaseException]) -> None:
        """Thread: publish the workload; then, so that every fault meets traffic, top-up
        rounds (one fault interval's worth of records each) until the schedule has applied
        every fault; with ``--duration``, full rounds until that time."""
        try:
            round_ = 0
            while True:
                asyncio.run(self.publish_paced(self.workload(round_)))
                round_ += 1
                if self.duration_s is not None:
                    if time.monotonic() - self.started >= self.duration_s:
                        break
                elif self.schedule_done.is_set():
                    break
                else:
                    self.round_events = max(1000, int(self.rate * self.interval_s))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
        finally:
            done.set()

    # ---- monitor ---------------------------------------------------------------------------

    def monitor(self) -> None:
        """Thread: every second, committed offsets (stalls, catch-up times) and RSS."""
        asyncio.run(self._monitor())

    async def _monitor(self) -> None:
        s = self.settings
        groups = {"worker": topology.stage(s, "worker", s.xp_topic).group,
                  "ledger": topology.sink(s, "sink").group}
        moved: dict[str, tuple[int, float]] = {}
        async with kafka.OffsetReader(s) as reader:
            while not self.stop_monitor.is_set():
                now = time.monotonic()
                try:
                    ends = await reader.high_watermarks(s.xp_topic)
                    committed = {g: await reader.committed(name, s.xp_topic)
                                 for g, name in groups.items()}
                except Exception:  # noqa: BLE001 - the broker may be restarting: next second
                    ends, committed = {}, {}
                for g, offsets in committed.items():
                    total = sum(o or 0 for o in offsets.values())
                    lag = sum(max(0, e - (offsets.get(p) or 0)) for p, e in ends.items())
                    last = moved.get(g)
                    if last is None or total > last[0] or lag == 0:
                        moved[g] = (total, now)
                    elif now - last[1] > self.report.longest_stall_s:
                        self.report.longest_stall_s = round(now - last[1], 1)
                        self.report.longest_stall_group = g
                        self.report.longest_stall_at_s = round(last[1] - self.started, 1)
                with self.lock:
                    for fault in self.report.faults:
                        if fault.catch_up_s is None and fault.target and committed and all(
                                (committed[g].get(p) or 0) >= end
                                for g in groups for p, end in fault.target.items()):
                            fault.catch_up_s = now - (self.started + fault.at_s + fault.took_s)
                    for name, proc in self.procs.items():
                        if proc.proc is None or not proc.alive():
                            continue
                        rss = memory_mib(proc.proc.pid)
                        peaks = [self.report.peak_rss_mib]
                        if self.in_outage.is_set():
                            peaks.append(self.report.outage_peak_rss_mib)
                        for peak in peaks:
                            peak[name] = max(peak.get(name, 0.0), rss)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))

    # ---- faults ----------------------------------------------------------------------------

    def apply(self, name: str) -> None:
        """Apply fault ``name`` now and record it (with the topic's end offsets after it)."""
        at = time.monotonic() - self.started
        self.say(f"[{at:7.1f} s] {name} ...")
        detail = getattr(self, "fault_" + name.replace("-", "_"))()
        took = time.monotonic() - self.started - at
        target = asyncio.run(kafka.high_watermarks(self.settings, self.settings.xp_topic))
        with self.lock:
            self.report.faults.append(Fault(name, round(at, 1), round(took, 1), detail,
                                            target=target))
        self.say(f"           {detail}")

    def _kill_restart(self, name: str) -> str:
        self.procs[name].kill()
        pause = self.rng.uniform(0.2, 3.0)
        time.sleep(pause)
        self.procs[name].start()
        return f"{name} killed -9, restarted after {pause:.1f} s"

    def fault_kill_worker(self) -> str:
        return self._kill_restart(self.rng.choice(self.live("worker-")))

    def fault_kill_sink(self) -> str:
        return self._kill_restart("sink")

    def fault_pause_worker(self) -> str:
        name = self.rng.choice(self.live("worker-"))
        proc = self.procs[name].proc
        assert proc is not None
        pause = 2 * self.settings.broker_session_timeout
        proc.send_signal(signal.SIGSTOP)
        time.sleep(pause)
        proc.send_signal(signal.SIGCONT)
        return f"{name} stopped (SIGSTOP) {pause:.0f} s, continued; {self._after_zombie(name)}"

    def _after_zombie(self, name: str) -> str:
        """Wait a while for worker ``name``, which may have lost its partitions unnoticed,
        to exit (a fenced zombie exits 70 at its next checkpoint) and start it again as a
        supervisor would; say which."""
        proc = self.procs[name].proc
        assert proc is not None
        deadline = time.monotonic() + 3 * self.settings.broker_session_timeout
        while self.procs[name].alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.procs[name].alive():
            return "it went on"
        code = proc.returncode
        self.procs[name].start()
        return f"it exited {code}, restarted"

    def _proxied(self) -> KafkaCluster | None:
        """The local cluster when its nodes sit behind cuttable proxies, else None."""
        cluster = self.stack.broker if self.stack is not None else None
        if isinstance(cluster, KafkaCluster) and cluster.nodes[0].proxy is not None:
            return cluster
        return None

    def fault_coordinator_cut(self) -> str:
        cluster = self._proxied()
        if cluster is None:
            return "skipped: needs the local 3-node Apache Kafka (--local, XP_LOCAL_BROKER=kafka-3)"
        if CUT_WORKER not in self.live("worker-"):
            return f"skipped: {CUT_WORKER} was lost for good"
        node = asyncio.run(cluster.coordinator(topics.tables_group(self.settings.worker_group)))
        cut = 2 * self.settings.broker_session_timeout
        cluster.cut(node)
        try:
            time.sleep(cut)
        finally:
            cluster.restore(node)
        return (f"{CUT_WORKER}'s path to node {node} (its group coordinator) cut for {cut:.0f} s,"
                f" healed; {self._after_zombie(CUT_WORKER)}")

    def fault_kill_totals_writer(self) -> str:
        return self._kill_restart("totals-writer")

    def _wait_for_write(self, timeout_s: float = 20.0) -> bool:
        """Poll ``pg_stat_activity`` (every 5 ms) until a sink's write to the ledger or the
        totals is running; False when none was seen within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with connect(self.settings.database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(lab_query("active_writes")).fetchone()
                if row is not None and row[0] > 0:
                    return True
                time.sleep(0.005)
        return False

    def fault_kill_in_commit(self) -> str:
        seen = self._wait_for_write()
        detail = self._kill_restart("sink")
        return detail + (" (killed while its write ran in PostgreSQL)" if seen
                         else " (no write seen within 20 s: killed anyway)")

    def fault_kill_in_rebalance(self) -> str:
        others = self.live("worker-")
        joined = self.add_worker()
        wait = self.rng.uniform(0.5, 3.0)
        time.sleep(wait)
        victim = self.rng.choice(others)
        return (f"{joined} joined; {wait:.1f} s later, mid-rebalance: "
                + self._kill_restart(victim))

    def fault_worker_lost(self) -> str:
        workers = self.live("worker-")
        if len(workers) < 2:
            workers.append(self.add_worker())
            time.sleep(2.0)
        victim = self.rng.choice(workers)
        self.procs[victim].kill()
        self.lost.add(victim)
        wait = self.rng.uniform(3.0, 8.0)
        time.sleep(wait)
        joined = self.add_worker()
        return f"{victim} killed -9 for good (partitions move); {joined} added {wait:.1f} s later"

    def fault_pg_outage(self) -> str:
        if self.stack is None or self.stack.postgres is None:
            return "skipped: needs the local stack (--local) to stop PostgreSQL"
        with self.lock:
            for name, proc in self.procs.items():
                if proc.proc is not None and proc.alive():
                    self.report.rss_before_outage_mib[name] = round(memory_mib(proc.proc.pid), 1)
        self.stack.postgres.stop(mode="immediate")
        self.in_outage.set()
        try:
            time.sleep(self.outage_s)
        finally:
            self.in_outage.clear()
            self.stack.postgres.start()
        return f"PostgreSQL stopped (immediate) for {self.outage_s:.0f} s, then started"

    def fault_pg_terminate(self) -> str:
        seen = self._wait_for_write()
        with connect(self.settings.database_url, autocommit=True) as conn:
            row = conn.execute(lab_query("terminate_clients")).fetchone()
        n = row[0] if row else 0
        return (f"{n} connections terminated" + (" while a write ran" if seen
                                                 else " (no write seen within 20 s)"))

    def fault_duplicate_storm(self) -> str:
        with self.lock:
            published = list(self.published)
        valid = []
        for key, value in published:
            try:
                decode_record(key, value, self.settings.limits())
            except InvalidEvent:
                continue
            valid.append((key, value))
        chosen = self.rng.sample(valid, min(STORM_RECORDS, len(valid)))
        storm = chosen * self.storm_repeats
        self.publish_now(storm)
        with self.lock:
            self.report.records_published += len(storm)
            self.report.duplicates_dropped += len(storm)
        return f"{len(chosen):,} published records resent {self.storm_repeats} times"

    def fault_claim_storm(self) -> str:
        rng = self.rng
        at_ms = int(time.time() * 1000)
        producers: list[list[TimedRecord]] = [[], [], []]
        for _ in range(CLAIM_STORM_LEARNERS):
            student = str(uuid.uuid4())  # not from rng: its seed is the workload's
            zone = rng.choice(CLAIM_ZONES)

            def claim(student: str = student, zone: str = zone) -> bytes:
                return orjson.dumps({"type": "daily_login_claim", "student_id": student,
                                     "id": str(uuid.uuid4()),
                                     "client_tz": zone, "source": "chaos"})
            resent, other = claim(), claim()
            for i, value in enumerate((resent, resent, resent, other, other)):
                producers[i % 3].append((student.encode(), value, at_ms))
            with self.lock:  # one award each: 10 XP (streak day 1 of CLAIM_POLICY)
                self.expected.students[student] = [10, 0, None]
                self.expected.valid_unique += 1
        victim = rng.choice(self.live("worker-"))

        async def send(half: int) -> None:
            await asyncio.gather(*(publish_timed(
                self.settings, self.settings.claims_topic,
                p[half * len(p) // 2:(half + 1) * len(p) // 2]) for p in producers))
        asyncio.run(send(0))
        self.procs[victim].kill()
        asyncio.run(send(1))
        pause = rng.uniform(0.2, 3.0)
        time.sleep(pause)
        self.procs[victim].start()
        with self.lock:
            self.report.records_published += sum(len(p) for p in producers)
        return (f"{CLAIM_STORM_LEARNERS} learners x 5 claims at one instant from 3 producers; "
                f"{victim} killed -9 half way, restarted after {pause:.1f} s")

    def fault_poison_burst(self) -> str:
        burst = hostile.poison(self.poison, self.rng.randrange(1 << 30), self.settings)
        accepted, _ = asyncio.run(hostile.publish(self.settings, [r for r, _ in burst]))
        taken = {id(r) for r, _ in accepted}
        reasons = Counter(reason for r, reason in burst if id(r) in taken)
        with self.lock:
            merge(self.expected, Expected(records=len(accepted), invalid=dict(reasons)))
            self.report.records_published += len(accepted)
        return (f"{len(accepted):,} hostile records the pipeline must dead-letter published "
                f"(streams lab hostile's XP cases: {dict(reasons.most_common())})")

    def fault_broker_restart(self) -> str:
        before = asyncio.run(kafka.high_watermarks(self.settings, self.settings.xp_topic))
        if self.broker_restart_command:
            subprocess.run(self.broker_restart_command, shell=True, check=True)  # noqa: S602
            how = f"ran {self.broker_restart_command!r}"
        elif self.stack is not None and isinstance(self.stack.broker, KafkaCluster):
            cluster = self.stack.broker
            for node in cluster.nodes:
                cluster.kill(node.node_id)
            pause = self.rng.uniform(0.5, 3.0)
            time.sleep(pause)
            cluster.restart_all()
            how = (f"Apache Kafka ({len(cluster.nodes)} node(s)) killed -9, restarted on its "
                   f"log dirs after {pause:.1f} s")
        else:
            return "skipped: needs --broker-restart-command or the local stack (--local)"
        try:
            after = asyncio.run(kafka.high_watermarks(self.settings, self.settings.xp_topic))
        except LookupError:
            after = {}
        lost = {p: (end, after.get(p, 0)) for p, end in before.items() if after.get(p, 0) < end}
        if lost:
            raise BrokerLostRecords(
                f"{how}; the broker came back without records it had acknowledged (partition: "
                f"end before, after) {lost}: its storage is not durable. The pipeline cannot "
                f"be checked past this: the broker's limit, not ours")
        return how

    def fault_broker_kill(self) -> str:
        cluster = self.stack.broker if self.stack is not None else None
        if not isinstance(cluster, KafkaCluster) or len(cluster.nodes) < 3:
            return "skipped: needs the local 3-node Apache Kafka (--local, XP_LOCAL_BROKER=kafka-3)"
        victim = self.rng.choice(cluster.nodes).node_id
        cluster.kill(victim)
        pause = self.rng.uniform(5.0, 15.0)
        time.sleep(pause)
        cluster.restart(victim)
        return f"Kafka node {victim} of 3 killed -9, restarted after {pause:.1f} s"

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        """Set up, run the workload under faults, wait for lag 0, check, clean up."""
        self.scratch.setup()
        self.scratch.add_topics(self.settings)
        asyncio.run(publish_timed(self.settings, self.settings.policies_topic, [
            (b"daily_login:1", orjson.dumps(CLAIM_POLICY), CLAIM_POLICY_PUBLISHED_MS)]))
        monitor = threading.Thread(target=self.monitor, name="chaos-monitor", daemon=True)
        published = threading.Event()
        errors: list[BaseException] = []
        try:
            for _ in range(self.initial_workers):
                self.add_worker()
            self.add_process("sink", "sink")
            self.add_process("totals-writer", "totals-writer")
            monitor.start()
            threading.Thread(target=self.publisher, args=(published, errors),
                             name="chaos-publisher", daemon=True).start()
            self.schedule(published)
            if errors:
                raise errors[0]
            self.say("schedule done; waiting for lag 0 ...")
            self.wait_caught_up()
            self.check()
        except BrokerLostRecords as exc:
            self.report.broker_limit = str(exc)
        finally:
            self.stop_monitor.set()
            if monitor.is_alive():
                monitor.join(10)
            for proc in self.procs.values():
                proc.stop()
            self.report.duration_s = round(time.monotonic() - self.started, 1)
            if self.report.problems:  # keep the evidence (a local stack goes anyway)
                self.say(f"kept for investigation: schema {self.scratch.schema}, topics "
                         f"{self.scratch.prefix}-*")
            else:
                self.scratch.cleanup(self.say)
        return self.report

    def schedule(self, published: threading.Event) -> None:
        """Apply faults every ``interval_s`` (jittered) until the publisher is done (it goes
        on until every fault ran at least once, or for ``--duration``)."""
        order: list[str] = []
        applied = 0
        while not published.is_set():
            time.sleep(self.interval_s * self.rng.uniform(0.75, 1.25))
            self.check_alive()
            if not order:
                order = list(self.faults)
                self.rng.shuffle(order)
            self.apply(order.pop())
            applied += 1
            if applied >= len(self.faults):
                self.schedule_done.set()

    def wait_caught_up(self) -> None:
        """Wait until the worker, ledger and totals groups have lag 0 (a process that exits
        by itself fails the run)."""
        s = self.settings
        started = time.monotonic()
        if any(f.name == "claim-storm" for f in self.report.faults):
            asyncio.run(lag.wait_caught_up(  # claims first: their awards go to the XP topic
                s, topology.group_topics(s, s.claims_topic), CATCH_UP_TIMEOUT_S,
                lambda _: self.check_alive(), 1.0))  # (an empty topic never counts as done)
        asyncio.run(lag.wait_caught_up(
            s, topology.group_topics(s, s.xp_topic),
            CATCH_UP_TIMEOUT_S, lambda _: self.check_alive(), 1.0))
        now = time.monotonic()
        with self.lock:  # lag 0: every fault's target is passed (the monitor samples each second)
            for fault in self.report.faults:
                if fault.catch_up_s is None:
                    fault.catch_up_s = now - (self.started + fault.at_s + fault.took_s)
        asyncio.run(lag.wait_caught_up(
            s, topology.group_topics(s, s.totals_changelog_topic), CATCH_UP_TIMEOUT_S,
            lambda _: self.check_alive(), 1.0))
        self.report.catch_up_after_last_s = round(time.monotonic() - started, 1)

    def check(self) -> None:
        """Compare ledger, totals and DLQ with the expectation (guarantees 1-3, 5, 7)."""
        outcome = read_outcome(self.settings, self.expected)
        r = self.report
        r.events_expected = self.expected.valid_unique
        r.ledger_rows = outcome.ledger_rows
        r.duplicates_dropped += self.expected.duplicates + self.expected.conflicts
        r.dlq_records = sum(outcome.dlq.values())
        r.dlq_expected = sum(self.expected.invalid.values())
        r.students_mismatched = len(outcome.ledger_vs_totals) + len(outcome.expected_vs_totals)
        r.problems = outcome.problems(self.expected)
        audit = asyncio.run(audit_changelogs(self.settings))
        r.changelog_differences = len(audit.differences)
        if audit.differences:
            r.problems.append(
                f"changelog audit: {len(audit.differences)} keys recovered from the worker's "
                f"changelogs differ from the ledgers ({audit.differing()}), e.g. "
                f"{[d.to_dict() for d in audit.differences[:3]]}")


def render(report: ChaosReport) -> Any:
    """The report as rich tables: the faults, then the findings."""
    from rich.console import Group
    from rich.table import Table

    faults = Table(title="faults applied")
    for col in ("at (s)", "fault", "took (s)", "caught up after (s)", "what happened"):
        faults.add_column(col, justify="right" if "(s)" in col else "left")
    for f in report.faults:
        faults.add_row(f"{f.at_s:.1f}", f.name, f"{f.took_s:.1f}",
                       "not reached" if f.catch_up_s is None else f"{f.catch_up_s:.1f}", f.detail)
    found = Table(title="outcome" + (" (OK)" if report.ok else " (FAILED)"))
    found.add_column("figure")
    found.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("records published", f"{report.records_published:,}"),
        ("events expected in the ledger", f"{report.events_expected:,}"),
        ("ledger rows", f"{report.ledger_rows:,}"),
        ("duplicate/conflicting records dropped", f"{report.duplicates_dropped:,}"),
        ("DLQ records (expected)", f"{report.dlq_records:,} ({report.dlq_expected:,})"),
        ("students mismatched", f"{report.students_mismatched:,}"),
        ("changelog audit: keys differing", "not run" if report.changelog_differences
         is None else f"{report.changelog_differences:,}"),
        ("longest stall (s)", f"{report.longest_stall_s:.1f} ({report.longest_stall_group}, "
         f"from {report.longest_stall_at_s:.0f} s)" if report.longest_stall_group else "0"),
        ("lag 0 after the last fault (s)", f"{report.catch_up_after_last_s:.1f}"),
        ("run time (s)", f"{report.duration_s:.1f}"),
    ]
    for name, mib in sorted(report.peak_rss_mib.items()):
        during = report.outage_peak_rss_mib.get(name)
        before = report.rss_before_outage_mib.get(name)
        extra = f" (PG outage: {before:.0f} -> peak {during:.0f})" if during and before else ""
        rows.append((f"peak RSS {name} (MiB)", f"{mib:.0f}{extra}"))
    for name, value in rows:
        found.add_row(name, value)
    parts: list[Any] = [faults, found]
    if report.broker_limit:
        parts.append(f"[bold]broker limit:[/bold] {report.broker_limit}")
    for problem in report.problems:
        parts.append(f"[bold red]problem:[/bold red] {problem}")
    return Group(*parts)
