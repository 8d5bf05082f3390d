"""The local stack's process helpers (streams.dev.procs)."""

from __future__ import annotations

import socket

from streams.dev.procs import LOWEST_PORT, ephemeral_start, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_never_repeat() -> None:
    """A port in the kernel's ephemeral range can be taken by any outgoing connection between
    the pick and the server's bind (a Kafka node failed to start with "Address already in
    use"): the ports handed out lie below that range, each bindable, none twice."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(LOWEST_PORT <= p < ephemeral_start() for p in ports), ports
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
