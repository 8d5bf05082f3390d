"""Kafka TLS and SASL settings, for real on Apache Kafka (marked ``kafka``): SCRAM-SHA-256 and
-512 users created when the storage is formatted, a SASL_SSL listener and a mutual-TLS SSL
listener with a CA made in the test (openssl); the whole pipeline (aiokafka clients and the
Faust worker) logs in with SCRAM over TLS and with a client certificate; a client without a
certificate or trusting another CA is refused; a wrong password, an unknown user and an
untrusted CA are each refused in one line. The mapping of every SASL mechanism to aiokafka and
Faust is checked in ``test_settings_security`` (unit).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from streams import kafka
from streams.dev.kafka_cluster import KafkaCluster, KafkaSecurity
from streams.lab.loadgen import LoadSpec, generate, publish_records
from streams.settings import Settings
from tests.integration.conftest import Pipeline, streams

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, pem = d / f"{name}.key", d / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
            str(pem), "-days", "2", "-subj", f"/CN={name}")
    return pem, key


def make_cert(d: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, pem, ext = (d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem",
                          d / f"{name}.ext")
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={name}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-out", str(pem), "-days", "2", "-extfile", str(ext))
    return pem, key


USERS = (("SCRAM-SHA-256", "xp-writer-256", "secret-256"),
         ("SCRAM-SHA-512", "xp-writer-512", "secret-512"))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One Apache Kafka node with SCRAM-SHA-256/512 users created at format time, a SASL_SSL
    listener and a mutual-TLS SSL listener; yields (cluster, CA file, client cert, client key)."""
    pki = tmp_path_factory.mktemp("pki")
    ca = make_ca(pki, "ca")
    broker_cert = make_cert(pki, "broker", ca)
    client_cert = make_cert(pki, "client", ca)
    keystore = pki / "broker-keystore.pem"
    keystore.write_text(broker_cert[1].read_text() + broker_cert[0].read_text())
    cluster = KafkaCluster(tmp_path_factory.mktemp("secure-kafka"),
                           security=KafkaSecurity(users=USERS, keystore=keystore, cafile=ca[0]))
    cluster.start()
    try:
        yield cluster, ca[0], client_cert, pki
    finally:
        cluster.stop()


def scram_settings(settings: Settings, secure_kafka, mechanism: str,  # type: ignore[no-untyped-def]
                   password: str | None = None, user: str | None = None) -> Settings:
    cluster, cafile, _, _ = secure_kafka
    _, name, secret = next(u for u in USERS if u[0] == mechanism)
    return settings.with_(kafka_bootstrap_servers=cluster.bootstrap_for("SASL_SSL"),
                          kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                          kafka_sasl_username=user or name,
                          kafka_sasl_password=password or secret, kafka_ssl_cafile=str(cafile))


def run_pipeline(s: Settings, logs: Path) -> None:
    """Create the topics, run the whole pipeline on a 2,000-record workload, assert exact."""
    asyncio.run(kafka.pipeline_topics(s))
    records, expected = generate(LoadSpec(events=2000, students=50, seed=43,
                                          max_record_bytes=s.max_record_bytes))
    pipeline = Pipeline(s, logs)
    try:
        pipeline.start()
        pipeline.publish(records)
        pipeline.wait_caught_up()
        pipeline.assert_exact(expected)
    finally:
        pipeline.stop()


@pytest.mark.kafka
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_pipeline_logs_in_with_scram_over_tls(
        secure_kafka, settings: Settings, tmp_path: Path, mechanism: str) -> None:  # type: ignore[no-untyped-def]
    run_pipeline(scram_settings(settings, secure_kafka, mechanism), tmp_path / "logs")


@pytest.mark.kafka
def test_the_pipeline_logs_in_with_a_client_certificate(
        secure_kafka, settings: Settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, cafile, (cert, key), _ = secure_kafka
    s = settings.with_(kafka_bootstrap_servers=cluster.bootstrap_for("SSL"),
                       kafka_security_protocol="SSL", kafka_ssl_cafile=str(cafile),
                       kafka_ssl_certfile=str(cert), kafka_ssl_keyfile=str(key))
    run_pipeline(s, tmp_path / "logs")


@pytest.mark.kafka
@pytest.mark.parametrize("who", ["no client certificate", "another CA"])
def test_tls_refuses_a_client_it_cannot_verify(secure_kafka, settings: Settings,  # type: ignore[no-untyped-def]
                                               who: str) -> None:
    cluster, cafile, (cert, key), pki = secure_kafka
    s = settings.with_(kafka_bootstrap_servers=cluster.bootstrap_for("SSL"),
                       kafka_security_protocol="SSL", kafka_ssl_cafile=str(cafile),
                       kafka_ssl_certfile=str(cert), kafka_ssl_keyfile=str(key))
    if who == "no client certificate":
        s = s.with_(kafka_ssl_certfile=None, kafka_ssl_keyfile=None)
    else:
        s = s.with_(kafka_ssl_cafile=str(make_ca(pki, "other-ca")[0]))
    with pytest.raises(Exception) as info:  # noqa: PT011 - aiokafka's error types vary here
        asyncio.run(asyncio.wait_for(publish_records(s, [(b"k", b"v")]), 30))
    reason = str(info.value)  # the broker closes the handshake, or the CA check fails
    assert any(w in reason for w in ("Unable to bootstrap", "SSL", "closed", "certificate")), reason


@pytest.mark.kafka
@pytest.mark.parametrize("who", ["wrong password", "unknown user", "untrusted CA"])
def test_apache_kafka_refuses_bad_credentials_in_one_line(
        secure_kafka, settings: Settings, who: str) -> None:  # type: ignore[no-untyped-def]
    s = scram_settings(settings, secure_kafka, "SCRAM-SHA-512")
    if who == "wrong password":
        s = s.with_(kafka_sasl_password="not-the-password")
    elif who == "unknown user":
        s = s.with_(kafka_sasl_username="nobody")
    else:
        s = s.with_(kafka_ssl_cafile=str(make_ca(secure_kafka[3], "other-ca")[0]))
    line = b'{"student_id": "3f1c7f4e-8a3b-4c55-9d7e-2b9f8f0a1c11"}\n'
    result = streams(["publish", "-", "--topic", s.xp_topic], s, stdin=line)
    err = result.stderr.decode().strip()
    assert result.returncode != 0, result.stdout.decode() + err
    assert len(err.splitlines()) == 1, err
    expected = {"wrong password": "authentication failed", "unknown user": "authentication failed",
                "untrusted CA": "certificate"}[who]
    assert expected in err.lower(), err
