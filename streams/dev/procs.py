"""Small helpers for the local stack's child processes: free ports, waiting, stopping."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise ``KeyboardInterrupt`` in the main thread, like Ctrl-C, so that a
    foreground command (demo, bench) runs its ``finally`` blocks: child processes stopped,
    scratch topics and schemas removed."""

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""The kernel's ephemeral port range: the local ports of outgoing connections."""

LOWEST_PORT = 10000
"""The lowest port :func:`free_port` hands out."""

_handed_out: set[int] = set()


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768, Linux's default, when the range
    cannot be read)."""
    try:
        return int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now, for a server started next.

    Drawn at random from :data:`LOWEST_PORT` up to the kernel's ephemeral range, never twice
    in one process. A port the kernel picks (bind to port 0) lies in the ephemeral range,
    where any outgoing connection may take it as its local port before the server binds it: a
    node of the three-node Kafka cluster failed to start so ("Address already in use").

    Raises:
        OSError: no free port found in 1,000 draws.
    """
    end = ephemeral_start()
    if end - LOWEST_PORT < 1000:  # a range set unusually low: the kernel's pick, as before
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    for _ in range(1000):
        port = random.randrange(LOWEST_PORT, end)  # noqa: S311 - spreads picks, no secret
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free TCP port between {LOWEST_PORT} and {end}")


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until 127.0.0.1:``port`` accepts a connection.

    Raises:
        TimeoutError: not listening after ``timeout_s`` seconds.
        RuntimeError: ``proc`` exited first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int | None:
    """SIGTERM ``proc``, wait up to ``timeout_s`` seconds, then SIGKILL. Returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM process ``pid`` (not our child), wait, then SIGKILL. Silent if already gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of process ``pid`` from ``/proc/<pid>/status`` in MiB: ``VmRSS``
    (resident now) or ``VmHWM`` (peak resident); 0.0 when unreadable (e.g. it exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
