"""Settings of the processor (``PROMPTPULSE_PROCESSOR__*``), on top of the shared ones.

Kafka, telemetry and the deployments folder come from :class:`~shared.settings.ServiceSettings`
(``PROMPTPULSE_KAFKA__*``, ``PROMPTPULSE_DEPLOYMENTS_DIR``...). What to judge, how often and with
which judge comes from each deployment's ``evaluation`` section; the settings here are about how
one worker process runs: its concurrency, patience and listening port.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from shared.settings import ServiceSettings


class ProcessorSection(BaseModel):
    """``PROMPTPULSE_PROCESSOR__*``: one processor worker."""

    host: str = Field(
        "127.0.0.1",
        description="Address of the ops listener (/healthz, /metrics). Loopback by default: "
        "expose it only behind something that controls who may read it.",
    )
    port: int = Field(
        8083,
        ge=0,
        le=65535,
        description="Port of the ops listener; 0 picks a free port (tests, several workers on one host).",
    )
    group_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Consumer group (and faust app id) shared by every worker of one installation. "
        "Default: '<topic prefix>processor'. Workers with the same group split the partitions.",
    )
    judge_concurrency: int = Field(
        64,
        ge=1,
        le=4096,
        description="Judge calls in flight at once in this worker. Throughput is about "
        "concurrency / judge latency (Little's law): raise it for slow judges, lower it when the "
        "judge endpoint rate-limits.",
    )
    judge_queue_size: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="Judged requests that may wait for a free judge slot (or for an open circuit "
        "breaker to close) before the stream pauses. Bounds memory; a full queue applies "
        "back-pressure to the consumer instead of dropping work.",
    )
    judge_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Time limit of one judge call attempt (connect, wait, read).",
    )
    judge_max_attempts: int = Field(
        4,
        ge=1,
        le=20,
        description="Attempts per judge call (the first one included) before the outcome is an "
        "error (timeout, rate limited, unparseable or endpoint error).",
    )
    retry_base_seconds: float = Field(
        0.5,
        ge=0,
        le=60,
        description="Backoff before retry n is drawn uniformly from [0, base * 2**(n-1)] (full "
        "jitter), and is at least the endpoint's Retry-After.",
    )
    retry_max_seconds: float = Field(
        20.0,
        ge=0,
        le=3600,
        description="Cap of one backoff, Retry-After included, so a hostile Retry-After cannot park "
        "a judge slot for an hour.",
    )
    breaker_failure_threshold: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Consecutive failed attempts (timeouts, 5xx, connection errors) against one "
        "judge connection that open its circuit breaker. While it is open, judge calls wait "
        "instead of failing, so an outage delays outcomes rather than turning them into errors.",
    )
    breaker_open_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How long an open breaker waits before letting one probe call through; the "
        "probe's success closes it, its failure opens it again.",
    )
    judge_max_tokens: int = Field(
        400,
        ge=16,
        le=32_000,
        description="max_tokens of a judge answer. A verdict is a score and a sentence; a combined "
        "call needs about 80 per metric.",
    )
    response_format: Literal["json_object", "none"] = Field(
        "json_object",
        description="Ask the judge for structured output (OpenAI's response_format json_object). "
        "Set 'none' for endpoints that reject the parameter; the parser copes with either.",
    )
    judged_text_max_chars: int = Field(
        16_000,
        ge=100,
        le=1_000_000,
        description="Longest question, context, answer or ground truth sent to a judge; longer text "
        "is cut (and the cut marked), which bounds the tokens one request can cost.",
    )
    rejudge_enabled: bool = Field(
        True,
        description="Carry out re-judge commands (docs/evaluation.md). One worker of the group runs "
        "them at a time (the commands topic has one partition), sharing this worker's judge cap "
        "and budgets, behind live judging.",
    )
    request_ttl_seconds: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="How long a sampled request waits for its response before it expires (counted, "
        "never judged). Also bounds how far back a restart re-reads, since a pending request "
        "holds its partition's committed offset.",
    )
    commit_interval_seconds: float = Field(
        1.0,
        gt=0,
        le=300,
        description="How often the lowest unfinished offset of each partition is committed. "
        "Shorter means less re-reading after a crash, at one commit request per interval.",
    )
    shutdown_drain_seconds: float = Field(
        15.0,
        ge=0,
        le=600,
        description="On stop, how long to wait for judge calls in flight to finish and publish "
        "before the last commit. Work still unfinished then is re-read by the next owner.",
    )
    session_timeout_seconds: float = Field(
        30.0,
        ge=6,
        le=1800,
        description="How long the group waits for a silent worker (crashed, killed, cut off) before "
        "giving its partitions to the others. Heartbeats come from a background thread, so slow "
        "judge calls do not count against it. Must lie within the broker's "
        "group.min/max.session.timeout.ms (6 s to 30 min by default).",
    )
    rebalance_drain_seconds: float = Field(
        5.0,
        ge=0,
        le=60,
        description="On a rebalance, how long to wait for judge jobs in flight before committing "
        "and letting partitions go; work finished in time is not judged again by the new owner. "
        "Keep well under the group's session timeout.",
    )
    publish_linger_ms: int = Field(
        50,
        ge=0,
        le=5_000,
        description="How long judged requests' evaluations gather before they go to the producer "
        "together (services/processor/publisher.py). Outcomes trickle out one request at a time; "
        "without gathering each becomes its own produce request, which costs more CPU than the "
        "judging around it. 50 ms is nothing next to a judge call. 0 hands each over at once.",
    )
    code_evaluator_threads: int = Field(
        4,
        ge=1,
        le=256,
        description="Threads that run the synchronous functions of code evaluators (one pool per "
        "worker, made only when a deployment has a code evaluator). A function that hangs past "
        "its timeout_seconds keeps its thread until it returns (Python cannot stop a thread): "
        "the outcome is a timeout error at once, and later calls wait for a free thread within "
        "their own timeout.",
    )
    stall_seconds: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="How long an assigned partition may have records waiting beyond the intake's "
        "reading position without that position moving before the worker reports itself "
        "stalled (a WARNING, HTTP 503 on /healthz, promptpulse_processor_stalled_partitions). "
        "A caught-up partition is never stalled, and neither is one held back by judging "
        "(full judge queue, open breaker, budget): that is back-pressure, not a stall.",
    )

    @model_validator(mode="after")
    def _retry_cap_covers_base(self) -> ProcessorSection:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_max_seconds must be >= retry_base_seconds")
        return self


class ProcessorSettings(ServiceSettings):
    """Everything the processor reads from the environment."""

    processor: ProcessorSection = Field(default_factory=ProcessorSection)

    def group_id(self) -> str:
        """The consumer group and faust app id: configured, or '<topic prefix>processor'."""
        return self.processor.group_id or f"{self.kafka.topic_prefix}processor"
