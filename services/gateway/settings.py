"""Settings of the gateway (``PROMPTPULSE_GATEWAY__*``), on top of the shared ones.

Kafka, telemetry and the deployments folder come from :class:`~shared.settings.ServiceSettings`;
the event publisher's settings are nested one level further
(``PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_DIR``). docs/gateway.md lists them all.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, model_validator

from services.gateway.events.settings import KIB, PublisherSection
from shared.settings import ServiceSettings

# Room an inference request event needs besides the inputs themselves (meta, ids, trace
# context, Struct framing), so a body at the limit still fits in one Kafka record.
EVENT_OVERHEAD_BYTES = 16 * KIB


class GatewaySection(BaseModel):
    """``PROMPTPULSE_GATEWAY__*``: one gateway process."""

    host: str = Field(
        "127.0.0.1",
        description="Address the HTTP listener binds. Loopback by default: put the gateway behind a "
        "load balancer or set 0.0.0.0 deliberately.",
    )
    port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP listener; 0 picks a free port (tests).")
    max_body_bytes: int = Field(
        512 * KIB,
        ge=1 * KIB,
        description="Largest request body accepted (413 beyond it). Must leave room in one Kafka "
        "record: at most publisher.max_event_bytes minus 16 KiB.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Gateway processes sharing the port (SO_REUSEPORT), one per core; the process "
        "started supervises them (services/gateway/workers.py). Needs a fixed port.",
    )
    worker_index: int | None = Field(
        None, ge=0, le=63, description="Set by the supervisor for each worker; never set it by hand."
    )
    otlp_max_body_bytes: int = Field(
        8 * 1024 * KIB,
        ge=1 * KIB,
        description="Largest OTLP export accepted on POST /v1/traces, counted after gzip is inflated "
        "(413 beyond it). Spans are re-cut per trace, so it may exceed publisher.max_event_bytes.",
    )
    otlp_max_spans: int = Field(
        20_000, ge=1, description="Most spans in one OTLP export (413 beyond it)."
    )
    request_timeout_seconds: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Longest a flow run may take, streaming included; past it the run is cancelled "
        "and the client gets 504 (or an error event on a stream already started).",
    )
    llm_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Seconds to connect to the LLM and between two reads of its answer, per try."
    )
    llm_max_retries: int = Field(
        0,
        ge=0,
        le=10,
        description="Retries of a flow's failed LLM call (429, 408, 409, 5xx, timeout, broken "
        "connection; Retry-After honoured up to 120 s). 0: a failure reaches the client at once as a "
        "502, and retry policy stays with the caller.",
    )
    default_rate_limit_per_minute: int | None = Field(
        None,
        ge=1,
        description="Requests per minute for keys that set no rate_limit_per_minute of their own; "
        "unset means no limit. Limits are per gateway process.",
    )
    forward_variant_header: bool = Field(
        True,
        description="Send x-promptpulse-variant with every LLM call, so an endpoint (llmsim's drift "
        "control, a proxy's logs) can tell variants apart.",
    )
    keys_reload_interval_seconds: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="How often the deployments' api_keys_file are checked for changes; a change "
        "reloads the deployments, so `promptpulse keys create|revoke` takes effect without SIGHUP. "
        "0 turns the check off.",
    )
    provision_demo_key: bool = Field(
        True,
        description="At start-up, make sure the deployments named 'demo' and 'demo-proxy' have a key "
        "(PROMPTPULSE_DEMO_API_KEY, PROMPTPULSE_DEMO_PROXY_API_KEY, else one generated into .local/keys/). "
        "Turn off in production.",
    )
    shutdown_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How long shutdown waits for requests in flight before cancelling them (each "
        "cancelled request still publishes its response event, status cancelled).",
    )
    admin_key: SecretStr | None = Field(
        None,
        description="Bearer key of the gateway's admin routes (GET /admin/deployments: every "
        "deployment's load status and problems). Unset: those routes answer 503.",
    )
    publisher: PublisherSection = Field(default_factory=PublisherSection)

    @model_validator(mode="after")
    def _body_fits_in_an_event(self) -> GatewaySection:
        room = self.publisher.max_event_bytes - EVENT_OVERHEAD_BYTES
        if self.max_body_bytes > room:
            raise ValueError(
                f"MAX_BODY_BYTES ({self.max_body_bytes}) must be at most PUBLISHER__MAX_EVENT_BYTES "
                f"minus {EVENT_OVERHEAD_BYTES} ({room}), or accepted requests could not be recorded"
            )
        return self


class GatewaySettings(ServiceSettings):
    """Everything the gateway reads from the environment."""

    gateway: GatewaySection = Field(default_factory=GatewaySection)

    @model_validator(mode="after")
    def _timeout_is_plausible(self) -> GatewaySettings:
        # A run may last its whole timeout: its latency must not be one the aggregator refuses.
        timeout_ms = self.gateway.request_timeout_seconds * 1000
        if timeout_ms >= self.plausibility.max_latency_ms:
            raise ValueError(
                f"GATEWAY__REQUEST_TIMEOUT_SECONDS ({self.gateway.request_timeout_seconds:g} s) must be shorter than "
                f"PLAUSIBILITY__MAX_LATENCY_MS ({self.plausibility.max_latency_ms:g} ms), or the responses of "
                "the slowest runs would be dead-lettered as implausible"
            )
        return self
