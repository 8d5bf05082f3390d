"""The health endpoints (streams.health): liveness follows the event loop, readiness the
process's own check; both served beside /metrics."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from streams.dev.procs import free_port
from streams.health import Health, serve


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:  # noqa: S310
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_liveness_follows_the_event_loop_and_readiness_the_check() -> None:
    health = Health()
    registry = CollectorRegistry()
    Counter("xp_probe_total", "A metric to find.", registry=registry).inc()
    port = free_port()
    serve(port, registry, health)
    assert get(port, "/healthz") == (200, "ok\n")  # no loop yet: starting is alive
    assert get(port, "/readyz") == (503, "starting\n")
    assert "xp_probe_total 1.0" in get(port, "/metrics")[1]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        health.watch(loop)
        reason: list[str | None] = ["joining the consumer group"]
        health.set_readiness(lambda: reason[0])
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (503, "joining the consumer group\n")
        reason[0] = None
        assert get(port, "/readyz") == (200, "ready\n")
        loop.call_soon_threadsafe(time.sleep, 2.0)  # a stuck call holds the loop
        time.sleep(0.2)
        assert health.alive(timeout_s=0.5) == "the event loop did not turn within 0.5 s"
        deadline = time.monotonic() + 10
        while health.alive(timeout_s=0.5) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert health.alive(timeout_s=0.5) is None  # it turns again
        health.set_readiness(lambda: 1 // 0)  # type: ignore[arg-type, return-value]
        status, body = get(port, "/readyz")
        assert status == 503 and body.startswith("readiness check failed")
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert get(port, "/healthz") == (200, "ok\n")  # a closed loop: the process is exiting


def test_the_endpoints_answer_on_ipv6_and_ipv4() -> None:
    """IPv6-only clusters probe ``[::1]``-style addresses; IPv4 ones ``127.0.0.1``."""
    port = free_port()
    serve(port, CollectorRegistry(), Health())
    for host in ("[::1]", "127.0.0.1"):
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10) as r:  # noqa: S310
            assert (r.status, r.read()) == (200, b"ok\n"), host
