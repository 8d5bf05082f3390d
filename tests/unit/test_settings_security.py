"""Kafka security settings map to aiokafka and faust-streaming; secrets never print."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest

from streams import kafka
from streams.errors import ConfigError
from streams.settings import Settings
from streams.worker.app import create_app

SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "xp-writer", "KAFKA_SASL_PASSWORD": "pw-5ecret"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_settings_reach_aiokafka_and_faust(mechanism: str) -> None:
    s = Settings.from_env({**SASL, "KAFKA_SASL_MECHANISM": mechanism})
    kwargs = kafka.client_kwargs(s)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("xp-writer",
                                                                              "pw-5ecret")
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    credentials = create_app(s).conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == mechanism  # type: ignore[union-attr]
    assert credentials.username == "xp-writer"


@pytest.mark.parametrize(("env", "message"), [
    ({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    ({**SASL, "KAFKA_SASL_PASSWORD": ""}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "c.pem"}, "go together"),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
])
def test_incomplete_security_settings_are_refused_in_one_line(env: dict[str, str],
                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    key, pem = tmp_path / "c.key", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(pem), "-days", "1", "-subj", "/CN=client"],
                   check=True, capture_output=True)
    s = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(pem),
                           "KAFKA_SSL_CERTFILE": str(pem), "KAFKA_SSL_KEYFILE": str(key)})
    context = kafka.client_kwargs(s)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert isinstance(create_app(s).conf.broker_credentials, faust.SSLCredentials)


def test_secrets_never_print() -> None:
    s = Settings.from_env({**SASL, "DATABASE_URL": "postgresql://xp:db-5ecret@db:5432/xp",
                           "XP_LEGACY_DATABASE_URL": "postgresql://old:old-5ecret@db/legacy"})
    for text in (repr(s), str(s), str(s.describe())):
        assert "5ecret" not in text, text
    assert "xp:***@db" in repr(s)
