"""Settings of llmsim, the OpenAI-compatible LLM simulator (``PROMPTPULSE_LLMSIM__*``).

Nested models map to nested variables: ``PROMPTPULSE_LLMSIM__LATENCY__TTFT_MS=50``,
``PROMPTPULSE_LLMSIM__FAULTS__RATE_429=0.05``; lists take JSON, for example
``PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE='[{"variant": "b", "level": 0.7, "after_seconds": 300}]'``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from shared.settings import ServiceSettings


class LatencyModel(BaseModel):
    """How long a simulated completion takes: first token after ``ttft_ms``, then ``tokens_per_second``."""

    ttft_ms: float = Field(
        250.0,
        ge=0,
        le=600_000,
        description="Time to first token in milliseconds (also the floor of a non-streaming call). "
        "Set 0 in tests and raise it to see how callers cope with slow models.",
    )
    tokens_per_second: float = Field(
        80.0,
        gt=0,
        le=10_000_000,
        description="Generation speed after the first token. A large value (1e6) makes answers instant.",
    )
    jitter: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Random spread of every delay as a fraction: 0.2 draws each delay from ±20% of its "
        "nominal value. 0 makes timing regular.",
    )


class FaultRates(BaseModel):
    """Share of requests that fail on purpose, drawn independently per request."""

    rate_429: float = Field(0.0, ge=0, le=1, description="Share answered 429 with Retry-After.")
    rate_500: float = Field(0.0, ge=0, le=1, description="Share answered 500.")
    rate_hang: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share that never answer (until the client leaves or hang_cap_seconds).",
    )
    rate_malformed: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share answered 200 with a broken JSON body or a broken SSE event.",
    )
    rate_unparseable: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share answered with a well-formed completion whose text is not what was asked "
        "for (a judge call gets no JSON verdict).",
    )
    retry_after_seconds: int = Field(
        1, ge=0, le=3600, description="Value of the Retry-After header on simulated 429 answers."
    )
    hang_cap_seconds: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="A hanging request gives up after this long with a 504, so a forgotten client "
        "cannot hold a handler for ever.",
    )

    @model_validator(mode="after")
    def _rates_fit_in_one(self) -> FaultRates:
        total = (
            self.rate_429
            + self.rate_500
            + self.rate_hang
            + self.rate_malformed
            + self.rate_unparseable
        )
        if total > 1:
            raise ValueError(f"fault rates add up to {total:g}, more than 1")
        return self


class DriftStep(BaseModel):
    """From a moment on, one variant's (or every variant's) answers degrade to ``level``."""

    variant: str = Field(
        "*", min_length=1, max_length=200, description="Variant name, or * for every variant."
    )
    level: float = Field(
        ..., ge=0, le=1, description="0 leaves answers intact, 1 makes them entirely off-topic."
    )
    after_seconds: float | None = Field(
        None, ge=0, description="Start this many seconds after llmsim started."
    )
    at: datetime | None = Field(
        None, description="Start at this wall-clock time (ISO 8601 with a timezone)."
    )

    @field_validator("at")
    @classmethod
    def _at_has_timezone(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a timezone, e.g. 2030-01-01T12:00:00Z")
        return value

    @model_validator(mode="after")
    def _one_start(self) -> DriftStep:
        if (self.after_seconds is None) == (self.at is None):
            raise ValueError("give exactly one of after_seconds and at")
        return self


class LlmsimSection(BaseModel):
    """The simulator's own settings (``PROMPTPULSE_LLMSIM__*``)."""

    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Listen address. Loopback by default; open it up only on a trusted network.",
    )
    port: int = Field(8082, ge=0, le=65535, description="Listen port (0 picks a free one).")
    models: list[str] = Field(
        default_factory=lambda: ["llmsim-chat", "llmsim-judge"],
        min_length=1,
        description="Model ids listed by GET /v1/models. Requests may name any model: it is echoed back.",
    )
    answer_tokens: int = Field(
        60,
        ge=1,
        le=100_000,
        description="Target length of a chat answer in tokens (a request's max_tokens cuts it shorter).",
    )
    latency: LatencyModel = Field(default_factory=LatencyModel, description="Latency model.")
    faults: FaultRates = Field(default_factory=FaultRates, description="Fault injection rates.")
    drift_schedule: list[DriftStep] = Field(
        default_factory=list,
        description="Quality drift steps (JSON list). The control API overrides them at run time.",
    )
    judge_echo: bool = Field(
        False,
        description="Judge answers repeat the judged text before their JSON verdict, to prove "
        "that a judge-output parser cannot be steered by the text it judges.",
    )
    seed: int | None = Field(
        None, description="Seed of fault draws and jitter; set it to make a run repeatable."
    )
    control_token: SecretStr | None = Field(
        None,
        description="When set, /control/* requires 'Authorization: Bearer <token>'. Never logged.",
    )


class LlmsimSettings(ServiceSettings):
    """Settings of ``promptpulse llmsim``."""

    llmsim: LlmsimSection = Field(default_factory=LlmsimSection)
