"""Settings of the aggregator (``PROMPTPULSE_AGGREGATOR__*``), on top of the shared ones.

Kafka, the database URL and pool, telemetry and the deployments folder come from
:class:`~shared.settings.ServiceSettings`. The deployments folder gives each deployment's
sampling rate (its ``evaluation`` section), which decides whose inputs and outputs are kept.
Lists and maps take JSON, e.g.
``PROMPTPULSE_AGGREGATOR__PRICES='{"gpt-4o": {"prompt_per_1k": 0.0025, "completion_per_1k": 0.01}}'``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator

from services.aggregator.api.settings import ApiSection
from services.aggregator.monitors.settings import MonitorsSection
from shared.settings import ServiceSettings


class ModelPrice(BaseModel):
    """What one model costs, per 1,000 tokens."""

    prompt_per_1k: float = Field(..., ge=0, le=1_000_000, description="Price of 1,000 prompt tokens.")
    completion_per_1k: float = Field(
        ..., ge=0, le=1_000_000, description="Price of 1,000 completion tokens."
    )
    currency: str = Field("USD", min_length=1, max_length=8, description="Currency of both prices.")


class AggregatorSection(BaseModel):
    """``PROMPTPULSE_AGGREGATOR__*``: one aggregator process."""

    host: str = Field(
        "127.0.0.1",
        description="Address of the HTTP listener (query API, health). Loopback by default: expose "
        "it only behind something that controls who may read it.",
    )
    port: int = Field(
        8081, ge=0, le=65535, description="Port of the HTTP listener; 0 picks a free port (tests)."
    )
    group_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Consumer group shared by every aggregator of one installation (default "
        "'<topic prefix>aggregator'). Its offsets live in Postgres (consumer_offsets), keyed by "
        "this name: changing it re-reads the topics from the start (harmless, deduplicated).",
    )
    batch_max_records: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="Records per micro-batch (one Postgres transaction). Larger batches amortise "
        "the per-transaction cost; this is also the most the aggregator holds in memory while "
        "Postgres is away.",
    )
    batch_max_wait_ms: int = Field(
        200,
        ge=1,
        le=60_000,
        description="How long a batch may wait to fill up after its first record: the upper "
        "bound ingestion adds to freshness under light traffic.",
    )
    retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Days of raw events and rollup minutes kept (by the request's start time, "
        "whole UTC days). Events older than this are skipped on arrival, so a replay from Kafka "
        "is exact only within retention.",
    )
    otlp_assemble_interval_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often spans received over OTLP are assembled into requests (docs/otlp.md). "
        "Only one replica works at a time (advisory lock).",
    )
    otlp_settle_seconds: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="How long an OTLP trace must be quiet before a GenAI span whose parents were never "
        "received is decided as a request with what is known.",
    )
    retention_interval_seconds: float = Field(
        3600.0,
        ge=1,
        le=86_400,
        description="How often retention runs (drops expired day partitions, creates the next "
        "ones). Only one replica works at a time (advisory lock).",
    )
    partitions_ahead_days: int = Field(
        2,
        ge=1,
        le=60,
        description="Day partitions created ahead of today, so ingestion at midnight never waits "
        "for DDL.",
    )
    max_future_seconds: float = Field(
        3600.0,
        ge=0,
        le=30 * 86_400,
        description="An event whose request started further than this in the future is "
        "dead-lettered (reason time-out-of-range): a producer with a broken clock must not "
        "create partitions years ahead.",
    )
    default_sampling_rate: float = Field(
        0.10,
        ge=0,
        le=1,
        description="Sampling rate for deployments not found in the deployments folder (a "
        "deployment found without an evaluation section samples nothing).",
    )
    retry_initial_seconds: float = Field(
        0.2, gt=0, le=60, description="First back-off after a failed batch transaction."
    )
    retry_max_seconds: float = Field(
        5.0,
        gt=0,
        le=600,
        description="Back-off cap while Postgres is away; the batch is retried until it commits, "
        "so nothing is lost, and consumption stays paused meanwhile.",
    )
    revoke_wait_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        description="On a rebalance, how long to let the batch in flight commit before giving "
        "up its partitions. Correctness does not depend on it (rows are deduplicated); it only "
        "saves re-reading.",
    )
    shutdown_wait_seconds: float = Field(
        15.0,
        ge=0,
        le=600,
        description="On stop, how long to let the batch in flight commit; an uncommitted batch "
        "is simply read again by the next owner.",
    )
    stall_seconds: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="How long an assigned partition may have records waiting beyond the ingest's "
        "intake position without that position moving before the aggregator reports itself "
        "stalled (a WARNING, HTTP 503 on /healthz, promptpulse_aggregator_stalled_partitions). "
        "A caught-up partition is never stalled, and neither is one held back on purpose "
        "(Postgres away, a batch being written or retried, positioning): that is not a stall.",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Optional price table, model name -> prices per 1,000 tokens; written to "
        "model_prices at start-up so token rollups can be turned into cost.",
    )
    fault_pause_before_commit_seconds: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="TEST ONLY. When > 0, the batch numbered fault_pause_on_batch waits this long "
        "after its inserts and before COMMIT (so a test can kill the process there). 0 in "
        "production.",
    )
    fault_pause_on_batch: int = Field(
        1, ge=1, description="TEST ONLY. Which batch since start-up (1-based) the fault hook holds."
    )
    fault_marker_path: Path | None = Field(
        None,
        description="TEST ONLY. File written when the fault hook starts holding a batch, so a "
        "test knows the transaction is open.",
    )

    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+[^\s]*$",
        description="The aggregator's address as people reach it (e.g. https://promptpulse.example.com), "
        "for links in alerts to the dashboard. Unset: alerts carry no dashboard link.",
    )
    api: ApiSection = Field(
        default_factory=ApiSection, description="Query API (PROMPTPULSE_AGGREGATOR__API__*)."
    )
    monitors: MonitorsSection = Field(
        default_factory=MonitorsSection,
        description="Monitor evaluation (PROMPTPULSE_AGGREGATOR__MONITORS__*).",
    )

    @model_validator(mode="after")
    def _retry_cap_covers_initial(self) -> AggregatorSection:
        if self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError("retry_max_seconds must be >= retry_initial_seconds")
        return self


class AggregatorSettings(ServiceSettings):
    """Everything the aggregator reads from the environment."""

    aggregator: AggregatorSection = Field(default_factory=AggregatorSection)
    api_read_key: SecretStr | None = Field(
        None,
        min_length=16,
        description="Bearer token for the query API's read routes and the dashboard "
        "(PROMPTPULSE_API_READ_KEY); a browser exchanges it once at POST /v1/session for a "
        "session cookie. Unset: /v1 answers 503.",
    )
    api_admin_key: SecretStr | None = Field(
        None,
        min_length=16,
        description="Bearer token for changing monitors (PROMPTPULSE_API_ADMIN_KEY). Unset: no "
        "one can change monitors through the API.",
    )

    def group_id(self) -> str:
        """The consumer group: configured, or '<topic prefix>aggregator'."""
        return self.aggregator.group_id or f"{self.kafka.topic_prefix}aggregator"
