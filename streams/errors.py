"""The project's error classes. Each docstring is the message an operator sees."""

from __future__ import annotations


class StreamsError(Exception):
    """XP Streams failed."""


class ConfigError(StreamsError):
    """A setting read from the environment is invalid."""


class InvalidEvent(StreamsError):
    """A record is not a valid event; it goes to the DLQ with ``reason``
    (docs/design.md, Contracts).

    Attributes:
        reason: short machine-readable token (``bad_json``, ``schema``, ``negative_delta``,
            ``key_mismatch``, ``oversized``, ``bad_timestamp``), used as the DLQ header and
            the metrics label.
        detail: one human-readable line.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PublishError(StreamsError):
    """The broker did not acknowledge a record; the caller must retry or fail loudly."""


class BrokerUnavailable(StreamsError):
    """No Kafka broker answered, or one refused the login or the certificate."""


class DatabaseUnavailable(StreamsError):
    """PostgreSQL could not be reached or dropped the connection; the batch is retried."""


class MigrationError(StreamsError):
    """A migration could not be applied, or an applied migration file was changed."""
