"""One judge call with everything around it: timeout, retries with backoff, the circuit breaker,
and the classification of what went wrong into the evaluation error types.

The openai client's own retries are off (``max_retries=0``): this module decides, so that
Retry-After, the breaker and the attempt count work the same for every endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import openai

from services.processor.evaluation.judge.breaker import CircuitBreaker
from services.processor.evaluation.judge.verdict import UnparseableVerdict
from shared.events.messages import EvaluationErrorType
from shared.flow.llm_http import CONNECTION_ERROR, TIMEOUT_ERROR, LlmHttpError
from shared.logs import redact
from shared.retry import Backoff, Jitter, retry_after_seconds

T = TypeVar("T")

TIMEOUT = EvaluationErrorType.EVALUATION_ERROR_TYPE_TIMEOUT
RATE_LIMITED = EvaluationErrorType.EVALUATION_ERROR_TYPE_RATE_LIMITED
UNPARSEABLE = EvaluationErrorType.EVALUATION_ERROR_TYPE_UNPARSEABLE
ENDPOINT_ERROR = EvaluationErrorType.EVALUATION_ERROR_TYPE_ENDPOINT_ERROR
CONFIGURATION = EvaluationErrorType.EVALUATION_ERROR_TYPE_CONFIGURATION

ERROR_NAMES = {
    TIMEOUT: "timeout",
    RATE_LIMITED: "rate_limited",
    UNPARSEABLE: "unparseable",
    ENDPOINT_ERROR: "endpoint_error",
    CONFIGURATION: "configuration",
    EvaluationErrorType.EVALUATION_ERROR_TYPE_BUDGET_EXHAUSTED: "budget_exhausted",
    EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL: "internal",
}


@dataclass
class CallCost:
    """What a call (all its attempts) cost, reported whether it succeeded or not."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0  # of the last attempt: the time the judge took to answer
    attempts: int = 0


@dataclass
class JudgeReply(Generic[T]):
    parsed: T
    cost: CallCost


class JudgeCallFailed(Exception):
    """Every attempt failed; ``error_type`` is an EvaluationErrorType value."""

    def __init__(self, error_type: EvaluationErrorType, message: str, cost: CallCost) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.cost = cost

    @property
    def error_name(self) -> str:
        return ERROR_NAMES.get(self.error_type, "internal")


@dataclass(frozen=True)
class _Failure:
    error_type: EvaluationErrorType
    message: str
    retryable: bool
    # "failure" counts toward opening the breaker; "neutral" says nothing about health.
    health: str
    retry_after: float | None = None


def classify(exc: BaseException) -> _Failure:
    """What a failed attempt means: error type, whether to retry, what it says about health.
    The openai client's errors, and the flow runtime's (an evaluation flow's llm nodes call
    through shared/flow/llm_http.py), which carry the same names and statuses."""
    if isinstance(exc, LlmHttpError):
        if exc.status_code is not None:
            return _status_failure(exc.status_code, exc.headers)
        if exc.error_type == TIMEOUT_ERROR:
            return _Failure(TIMEOUT, "the judge did not answer in time", True, "failure")
        if exc.error_type == CONNECTION_ERROR:
            return _Failure(ENDPOINT_ERROR, "cannot reach the judge endpoint", True, "failure")
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return _Failure(TIMEOUT, "the judge did not answer in time", True, "failure")
    if isinstance(exc, openai.APIStatusError):
        return _status_failure(exc.status_code, getattr(getattr(exc, "response", None), "headers", None))
    if isinstance(exc, openai.APIConnectionError):
        return _Failure(ENDPOINT_ERROR, "cannot reach the judge endpoint", True, "failure")
    # A 200 whose body is not a completion (cut JSON, wrong shape) and anything else the client
    # raises: the endpoint is misbehaving, and another attempt may get a good answer.
    name = exc.error_type if isinstance(exc, LlmHttpError) else type(exc).__name__
    return _Failure(ENDPOINT_ERROR, f"the judge endpoint sent an unusable response ({name})", True, "failure")


def _status_failure(status: int, headers: Mapping[str, str] | None) -> _Failure:
    if status == 429:
        return _Failure(
            RATE_LIMITED, "the judge endpoint rate-limited the call (HTTP 429)", True, "neutral",
            retry_after_seconds(headers),
        )
    if status in (401, 403, 404):
        # Wrong key, no access, unknown model or deployment: retrying cannot help.
        return _Failure(
            CONFIGURATION,
            f"the judge endpoint refused the call (HTTP {status}): check the judge connection and model",
            False, "neutral",
        )
    if status == 408:
        return _Failure(TIMEOUT, "the judge endpoint timed out (HTTP 408)", True, "failure")
    if status >= 500:
        return _Failure(ENDPOINT_ERROR, f"the judge endpoint failed (HTTP {status})", True, "failure")
    return _Failure(
        ENDPOINT_ERROR, f"the judge endpoint rejected the call (HTTP {status})", status == 409, "neutral"
    )


class JudgeClient:
    """Calls one judge connection (an ``openai.AsyncOpenAI``-like client) for verdicts."""

    def __init__(
        self,
        client: Any,
        breaker: CircuitBreaker,
        *,
        timeout_seconds: float,
        max_attempts: int,
        retry_base_seconds: float,
        retry_max_seconds: float,
        max_tokens: int,
        response_format: str = "json_object",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_attempt: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self.breaker = breaker
        self._timeout = timeout_seconds
        self._max_attempts = max_attempts
        # Full jitter: a judge endpoint failing for many calls at once is not hit in one wave.
        self._backoff = Backoff(retry_base_seconds, retry_max_seconds, Jitter.FULL)
        self._max_tokens = max_tokens
        self._response_format = response_format
        self._sleep = sleep
        # Called with "ok" or an error name after every attempt (for the metrics).
        self._on_attempt = on_attempt or (lambda outcome: None)
        # What every request of this client sends besides the model and messages, built once.
        self._options: dict[str, Any] = {"temperature": 0, "max_tokens": max_tokens, "timeout": timeout_seconds}
        if response_format == "json_object":
            self._options["response_format"] = {"type": "json_object"}

    async def _create(self, model: str, messages: list[dict[str, str]]) -> Any:
        options: dict[str, Any] = {"model": model, "messages": messages, **self._options}
        # The client's timeout covers the HTTP exchange; this one also covers a stuck connect
        # pool or a server that trickles bytes for ever.
        async with asyncio.timeout(self._timeout + 1.0):
            return await self._client.chat.completions.create(**options)

    async def call(
        self, model: str, messages: list[dict[str, str]], parse: Callable[[str | None], T]
    ) -> JudgeReply[T]:
        """The parsed verdict; raises JudgeCallFailed once every attempt has failed."""
        cost = CallCost(model=model)
        while True:
            cost.attempts += 1
            # A closed breaker lets the call through at once: no coroutine to make for that.
            probe = False if self.breaker.state == "closed" else await self.breaker.acquire()
            started = time.perf_counter()
            try:
                response = await self._create(model, messages)
            except asyncio.CancelledError:
                self.breaker.record_neutral(probe)
                raise
            except Exception as exc:
                cost.latency_ms = (time.perf_counter() - started) * 1000
                failure = classify(exc)
                if failure.health == "failure":
                    self.breaker.record_failure()
                else:
                    self.breaker.record_neutral(probe)
                self._on_attempt(ERROR_NAMES[failure.error_type])
                if not failure.retryable or cost.attempts >= self._max_attempts:
                    raise JudgeCallFailed(failure.error_type, redact(failure.message), cost) from None
                await self._sleep(self._backoff.delay(cost.attempts, at_least=failure.retry_after))
                continue
            cost.latency_ms = (time.perf_counter() - started) * 1000
            self.breaker.record_success()
            usage = getattr(response, "usage", None)
            cost.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            cost.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
            cost.model = getattr(response, "model", None) or model
            try:
                parsed = parse(_reply_text(response))
            except UnparseableVerdict as exc:
                self._on_attempt("unparseable")
                if cost.attempts >= self._max_attempts:
                    raise JudgeCallFailed(UNPARSEABLE, f"unparseable judge answer: {exc}", cost) from None
                await self._sleep(self._backoff.delay(cost.attempts))
                continue
            self._on_attempt("ok")
            return JudgeReply(parsed, cost)


def _reply_text(response: Any) -> str | None:
    choices = getattr(response, "choices", None) or []
    if not choices:
        return None
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else None
