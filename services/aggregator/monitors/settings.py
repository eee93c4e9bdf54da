"""Settings of monitor evaluation (``PROMPTPULSE_AGGREGATOR__MONITORS__*``)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode


class AlertmanagerSection(BaseModel):
    """Where monitor alerts are sent besides the alerts topic: Prometheus Alertmanager (API v2)."""

    # NoDecode: the environment's value reaches _comma_separated as text (JSON or a plain list).
    urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        max_length=16,
        description="Base URLs of the Alertmanager instances (every one gets every alert, as "
        "Alertmanager's HA setup expects), e.g. http://alertmanager:9093. A JSON list or a "
        "comma-separated string. Empty: nothing is sent.",
    )
    resend_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How often a firing alert is sent again. Must stay well inside "
        "Alertmanager's resolve_timeout (default 5m), or Alertmanager resolves it meanwhile.",
    )
    timeout_seconds: float = Field(10.0, gt=0, le=300, description="Timeout of one POST /api/v2/alerts.")
    retry_initial_seconds: float = Field(
        1.0, gt=0, le=3600, description="Wait before retrying a failed send; doubles after each failure."
    )
    retry_max_seconds: float = Field(
        60.0, gt=0, le=86_400, description="Cap of the wait between failed sends."
    )
    resolved_max_attempts: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Attempts to deliver a resolution before giving up (recorded). Firing alerts "
        "are retried for as long as they fire; a resolution not delivered is still resolved by "
        "Alertmanager itself once resolve_timeout passes without a re-send.",
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for index, url in enumerate(value):
            if not re.match(r"^https?://[^\s/]+", url):
                # The value is not echoed: a URL may carry a password (user:password@host).
                raise ValueError(f"entry {index + 1} is not an http:// or https:// URL")
        return [url.rstrip("/") for url in value]

    @model_validator(mode="after")
    def _retry_cap_covers_initial(self) -> AlertmanagerSection:
        if self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError("retry_max_seconds must be >= retry_initial_seconds")
        return self


class MonitorsSection(BaseModel):
    """How and when monitors are evaluated and their alerts delivered."""

    enabled: bool = Field(
        True,
        description="Run the monitor evaluator in this process. Every replica may leave it on: "
        "only the one holding the Postgres advisory lock evaluates, the others stand by.",
    )
    grace_seconds: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="How long after a window closes it is evaluated, so late events (a gateway "
        "spool draining, a slow judge) land in it first. Longer: fewer wrong alerts, later ones.",
    )
    tick_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often the evaluator looks for windows that are due, and for alerts "
        "still to publish. Bounds how late after close + grace an alert goes out.",
    )
    confidence_level: float = Field(
        0.95,
        ge=0.5,
        le=0.999,
        description="Level of the confidence intervals reported with each window (Wilson for "
        "rates, Student t for average scores).",
    )
    max_catch_up_windows: int = Field(
        1440,
        ge=1,
        le=1_000_000,
        description="After downtime, at most this many missed windows per monitor are evaluated "
        "(the newest); older ones are skipped and logged.",
    )
    max_windows_per_tick: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Windows evaluated in one transaction; a long catch-up spreads over ticks so "
        "no transaction holds the evaluator lock for long.",
    )
    publish_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How long publishing one alert to Kafka may take before the batch is left "
        "for the next tick (alerts wait in Postgres meanwhile, none is lost).",
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Timeout of one webhook POST."
    )
    webhook_max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Attempts per alert and webhook before giving up (recorded on the alert). "
        "Only server errors, 429 and network failures are retried.",
    )
    webhook_retry_initial_seconds: float = Field(
        2.0, gt=0, le=3600, description="Wait before the second attempt; doubles after each failure."
    )
    webhook_retry_max_seconds: float = Field(
        300.0, gt=0, le=86_400, description="Cap of the wait between webhook attempts."
    )

    alertmanager: AlertmanagerSection = Field(
        default_factory=AlertmanagerSection,
        description="Prometheus Alertmanager (PROMPTPULSE_AGGREGATOR__MONITORS__ALERTMANAGER__*).",
    )

    @model_validator(mode="after")
    def _retry_cap_covers_initial(self) -> MonitorsSection:
        if self.webhook_retry_max_seconds < self.webhook_retry_initial_seconds:
            raise ValueError("webhook_retry_max_seconds must be >= webhook_retry_initial_seconds")
        return self
