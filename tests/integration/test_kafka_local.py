"""The local Apache Kafka's failure modes (streams/dev/kafka_cluster.py): a missing Java says
what to install in one line; a node that cannot start fails with its log's last lines, not a
hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streams.dev.kafka_cluster import KafkaCluster, KafkaUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


def test_without_java_the_local_kafka_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "XP_KAFKA_JARS": str(tmp_path / "jars"),
           "XP_LOCAL_BROKER": "kafka"}
    done = subprocess.run([sys.executable, "-m", "streams", "dev", "up", "--dir",
                           str(tmp_path / "stack")], env=env, capture_output=True, timeout=120,
                          check=False)
    err = done.stderr.decode().strip()
    assert done.returncode == 1, err
    assert len(err.splitlines()) == 1, err
    assert "java not found" in err and "default-jre-headless" in err, err


def test_a_node_that_cannot_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, nodes=1)
    node = cluster.nodes[0]
    with socket.socket() as squatter:  # its controller port taken: the node exits at start
        squatter.bind(("127.0.0.1", node.controller_port))
        squatter.listen()
        try:
            with pytest.raises(KafkaUnavailable) as raised:
                cluster.start()
        finally:
            cluster.stop()
    message = str(raised.value)
    assert "exited" in message and "\n" not in message, message
    assert "Address already in use" in message or "BindException" in message, message
