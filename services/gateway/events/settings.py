"""Settings of the gateway's event publisher (``PROMPTPULSE_GATEWAY__PUBLISHER__*``).

The gateway's settings class embeds :class:`PublisherSection` as its ``publisher`` field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

KIB = 1024
MIB = 1024 * KIB


class PublisherSection(BaseModel):
    """How the gateway hands events to Kafka, and how much it holds while Kafka is away."""

    spool_dir: Path = Field(
        Path(".local/gateway/spool"),
        description="Folder of the on-disk spool. One per gateway process (it is locked); put it "
        "on a persistent volume so events spooled during an outage survive a restart.",
    )
    spool_max_bytes: int = Field(
        256 * MIB,
        ge=1 * MIB,
        description="Disk the spool may use. When reservations and spooled events reach it, new "
        "requests get 503; raise it to ride out longer broker outages at full traffic.",
    )
    spool_segment_bytes: int = Field(
        8 * MIB,
        ge=64 * KIB,
        description="Size of one spool file. Space is freed a whole file at a time once its "
        "events are delivered, so smaller files free space sooner at the cost of more files.",
    )
    token_chunk_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of the spool and of the queue token chunks may fill; beyond it they "
        "are dropped (counted), so request and response events keep the rest.",
    )
    queue_max_bytes: int = Field(
        32 * MIB,
        ge=64 * KIB,
        description="Memory held by events waiting for the sender. Only fills when Kafka or the "
        "disk is slower than the traffic; beyond it new requests get 503.",
    )
    request_reserve_bytes: int = Field(
        64 * KIB,
        ge=1 * KIB,
        description="Room held for one request's events (on top of its body size) from admission "
        "until its response event is published. Raise it for flows with very large outputs.",
    )
    max_event_bytes: int = Field(
        900_000,
        ge=1 * KIB,
        description="Largest event sent. Keep it under the broker's message.max.bytes (1 MiB by "
        "default) and the gateway's body limit under it.",
    )
    send_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a batch may wait for Kafka's acknowledgement before the broker "
        "counts as unreachable and events go to the spool.",
    )
    batch_max_events: int = Field(
        2000, ge=1, le=1_000_000, description="Most events handed to the producer at once."
    )
    batch_max_bytes: int = Field(
        4 * MIB, ge=64 * KIB, description="Most bytes handed to the producer (or spooled) at once."
    )
    batch_linger_ms: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="In direct mode, how long the sender lets events gather after the first one "
        "before handing them to the producer. Each batch costs the gateway the same CPU whatever "
        "its size, so fewer, larger batches leave more for requests; events reach Kafka this much "
        "later (no request waits for them). 0 sends whatever is queued at once.",
    )
    retry_initial_seconds: float = Field(
        0.5, gt=0, le=60, description="First wait before retrying the broker while spooling."
    )
    retry_max_seconds: float = Field(
        5.0, gt=0, le=600, description="Longest wait between retries (the wait doubles up to it)."
    )
    close_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=600,
        description="How long shutdown may spend flushing queued events before writing the rest "
        "to the spool for the next start.",
    )
    coalesce_max_tokens: int = Field(
        32, ge=1, le=10_000, description="Tokens per token-chunk event, at most."
    )
    coalesce_interval_ms: float = Field(
        50.0,
        ge=0,
        le=60_000,
        description="A token chunk is published once its first token is this old, even if it "
        "is not full, so a slow stream still shows progress.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PublisherSection:
        if self.spool_segment_bytes > self.spool_max_bytes:
            raise ValueError("spool_segment_bytes must not exceed spool_max_bytes")
        if self.max_event_bytes > self.spool_max_bytes * self.token_chunk_share:
            raise ValueError("max_event_bytes must fit in spool_max_bytes * token_chunk_share")
        if self.request_reserve_bytes > self.spool_max_bytes:
            raise ValueError("request_reserve_bytes must not exceed spool_max_bytes")
        if self.retry_initial_seconds > self.retry_max_seconds:
            raise ValueError("retry_initial_seconds must not exceed retry_max_seconds")
        return self
