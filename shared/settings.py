"""Settings shared by every PromptPulse service.

One environment can run every service: common settings sit under ``PROMPTPULSE_`` (for example
``PROMPTPULSE_DATABASE_URL``, ``PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS``), and each service's own
settings are nested under its name (``PROMPTPULSE_LLMSIM__PORT``, ``PROMPTPULSE_GATEWAY__PORT``).
A service's settings class subclasses :class:`ServiceSettings` and is built with
:func:`load_settings`, which turns a validation failure into :class:`SettingsError` naming the
environment variable, so a bad value stops the service at start-up with a message a human can act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PROMPTPULSE_"
NESTED_DELIMITER = "__"


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class KafkaSettings(BaseModel):
    """How every service reaches Kafka (``PROMPTPULSE_KAFKA__*``)."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Comma-separated host:port list of brokers. Change for any non-local cluster.",
    )
    topic_prefix: str = Field(
        "promptpulse.",
        description="Prefix of every topic name; change to run several installations on one cluster.",
    )
    partitions: int = Field(
        6,
        ge=1,
        le=10_000,
        description="Partitions of topics this installation creates. Caps how many processor and "
        "aggregator replicas can share the work; raise before scaling out (existing topics keep theirs).",
    )
    replication_factor: int = Field(
        1, ge=1, le=32, description="Replication factor of created topics: 3 on a real cluster."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol; SASL_SSL for most managed clusters."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism, when security_protocol uses SASL."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers with.")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client private key for mutual TLS.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_have_ports(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("at least one host:port is required")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)


class DatabaseSettings(BaseModel):
    """PostgreSQL connection pool settings (``PROMPTPULSE_DATABASE__*``); the URL is top-level."""

    pool_min_size: int = Field(1, ge=0, le=1000, description="Connections kept open.")
    pool_max_size: int = Field(10, ge=1, le=1000, description="Upper bound of the pool.")
    ssl: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "prefer", description="PostgreSQL TLS mode (libpq's sslmode names)."
    )
    ssl_rootcert: Path | None = Field(None, description="CA bundle for verify-ca / verify-full.")


class TelemetrySettings(BaseModel):
    """OpenTelemetry settings (``PROMPTPULSE_TELEMETRY__*``; ``OTEL_EXPORTER_OTLP_ENDPOINT`` too)."""

    spans_to_kafka: bool = Field(
        True, description="Publish finished spans to the spans topic, where the aggregator stores them."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="json for machines (one object a line, with trace ids), text for people."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Root log level.")


class PlausibilitySettings(BaseModel):
    """Where a figure stops being believable (``PROMPTPULSE_PLAUSIBILITY__*``): an event beyond
    these is dead-lettered, not counted (shared/plausibility.py). Set the same on every service.
    The upper bounds of the bounds keep any day's sums far from overflowing a bigint or a float8."""

    max_latency_ms: float = Field(
        7_200_000.0,
        gt=0,
        le=7 * 24 * 3_600_000,
        description="Longest plausible duration in milliseconds: a request's latency and time to first "
        "token, a judge call's latency. Two hours by default, above any gateway request timeout.",
    )
    max_tokens_per_call: int = Field(
        10_000_000,
        ge=1,
        le=1_000_000_000,
        description="Most tokens one LLM or judge call can plausibly report, per kind (prompt, "
        "completion, total). Ten million by default, several times the largest context windows.",
    )


class ServiceSettings(BaseSettings):
    """Common settings; each service subclasses it and adds its own nested section."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="ignore",
        validate_default=True,
    )

    database_url: SecretStr = Field(
        SecretStr("postgresql://promptpulse:promptpulse@127.0.0.1:5432/promptpulse"),
        description="PostgreSQL DSN (PROMPTPULSE_DATABASE_URL); holds a password, so never logged.",
    )
    deployments_dir: Path = Field(
        Path("deploy/local/deployments"),
        description="Folder of deployment YAML files and connections.yaml, the same for every service.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    plausibility: PlausibilitySettings = Field(default_factory=PlausibilitySettings)
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="The event loop the service runs on (shared/eventloop.py): uvloop, or asyncio's own.",
    )


S = TypeVar("S", bound=BaseSettings)


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a pydantic error location."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + NESTED_DELIMITER.join(parts).upper()


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, raising :class:`SettingsError` naming each bad field."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{env_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from None
