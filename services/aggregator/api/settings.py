"""Settings of the query API (``PROMPTPULSE_AGGREGATOR__API__*``) and its two keys.

The keys are top-level variables, ``PROMPTPULSE_API_READ_KEY`` (read everything) and
``PROMPTPULSE_API_ADMIN_KEY`` (also change monitors), sent as ``Authorization: Bearer <key>``.
Without a read key the ``/v1`` routes answer 503, so an aggregator never serves its data to
anyone by accident; health, readiness, metrics and the OpenAPI document stay open.

This module imports nothing of the aggregator, so ``services/aggregator/settings.py`` can
import :class:`ApiSection` from it. The accessors below are the one place that knows where the
section and keys sit in the aggregator's settings (``AggregatorSettings.aggregator.api``, ``api_*_key``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, SecretStr

if TYPE_CHECKING:
    from services.aggregator.settings import AggregatorSettings

MIN_KEY_LENGTH = 16


class ApiSection(BaseModel):
    """The query API served on the aggregator's HTTP listener."""

    session_ttl_seconds: int = Field(
        12 * 3600,
        ge=60,
        le=30 * 86_400,
        description="Lifetime of the session cookie a browser gets for the read key "
        "(POST /v1/session); it dies earlier if the read key changes.",
    )
    cookie_secure: bool = Field(
        False,
        description="Mark the session cookie Secure (sent over HTTPS only). Turn on whenever the "
        "API is reached through HTTPS, which is any time it leaves loopback.",
    )
    default_page_size: int = Field(50, ge=1, le=10_000, description="Rows per page when limit is not given.")
    max_page_size: int = Field(500, ge=1, le=10_000, description="Largest limit a client may ask for.")
    max_series_points: int = Field(
        1440,
        ge=10,
        le=100_000,
        description="Most steps a metrics time series may have; a longer range needs a larger step.",
    )
    max_range_days: int = Field(
        400, ge=1, le=3650, description="Longest from..to range a metrics query may cover."
    )
    sse_heartbeat_seconds: float = Field(
        15.0,
        gt=0,
        le=300,
        description="Comment line sent on an idle stream, so proxies keep it open and a "
        "vanished client is noticed.",
    )
    sse_snapshot_minutes: int = Field(
        15, ge=1, le=1440, description="Minutes of figures a new stream subscriber gets first."
    )
    sse_max_subscribers: int = Field(
        1000, ge=1, le=100_000, description="Open streams per process; more get 503."
    )
    quality_window_seconds: int = Field(
        300,
        ge=60,
        le=86_400,
        multiple_of=60,
        description="Length of the window whose figures GET /v1/prometheus/quality serves: the "
        "newest one that closed at least monitors.grace_seconds ago (whole minutes).",
    )
    quality_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long one reading of GET /v1/prometheus/quality is served again, so "
        "several scrapers (an HA pair of Prometheus) cost one read of Postgres.",
    )


def api_section(settings: AggregatorSettings) -> ApiSection:
    """Where the API's settings live in the aggregator's settings (one place to change)."""
    return settings.aggregator.api


def read_key(settings: AggregatorSettings) -> SecretStr | None:
    return settings.api_read_key


def admin_key(settings: AggregatorSettings) -> SecretStr | None:
    return settings.api_admin_key
