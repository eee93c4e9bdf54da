"""Judge calls: retries, backoff honouring Retry-After, error classification, the circuit breaker.

The openai client is replaced by a scripted stand-in raising the real openai exception types;
the integration tests drive the same code against llmsim over HTTP.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest

from services.processor.evaluation.judge.breaker import CircuitBreaker
from services.processor.evaluation.judge.client import (
    CONFIGURATION,
    ENDPOINT_ERROR,
    RATE_LIMITED,
    TIMEOUT,
    UNPARSEABLE,
    JudgeCallFailed,
    JudgeClient,
)
from services.processor.evaluation.judge.verdict import Verdict, parse_verdict
from shared.retry import Backoff, Jitter

REQUEST = httpx2.Request("POST", "http://judge.invalid/v1/chat/completions")


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers or {}, request=REQUEST)
    cls = {429: openai.RateLimitError, 500: openai.InternalServerError, 401: openai.AuthenticationError}.get(
        status, openai.APIStatusError
    )
    return cls(f"HTTP {status} sk-secretsecretsecret123456", response=response, body=None)


def completion(text: str, prompt: int = 100, completion_tokens: int = 20) -> Any:
    return SimpleNamespace(
        model="judge-1",
        choices=[SimpleNamespace(message=SimpleNamespace(content=text))],
        usage=SimpleNamespace(prompt_tokens=prompt, completion_tokens=completion_tokens),
    )


class ScriptedOpenAI:
    """Answers (or raises) from a script, one entry per call, and records each request."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, **kwargs: Any) -> Any:
        self.requests.append(kwargs)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return await step()
        return step


def make_client(script: list[Any], **overrides: Any) -> tuple[JudgeClient, ScriptedOpenAI, list[float]]:
    fake = ScriptedOpenAI(script)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    options = dict(
        timeout_seconds=5.0, max_attempts=3, retry_base_seconds=0.5, retry_max_seconds=10.0,
        max_tokens=400, sleep=sleep,
    )
    options.update(overrides)
    breaker = options.pop("breaker", CircuitBreaker(100, 1.0))
    return JudgeClient(fake, breaker, **options), fake, sleeps


GOOD = '{"score": 4, "reason": "fine"}'


async def test_a_good_answer_is_parsed_and_costed() -> None:
    client, fake, sleeps = make_client([completion(GOOD)])
    reply = await client.call("judge-1", [{"role": "user", "content": "x"}], parse_verdict)
    assert reply.parsed == Verdict(4, "fine")
    assert (reply.cost.prompt_tokens, reply.cost.completion_tokens, reply.cost.attempts) == (100, 20, 1)
    (request,) = fake.requests
    assert request["temperature"] == 0 and request["response_format"] == {"type": "json_object"}
    assert request["max_tokens"] == 400 and request["timeout"] == 5.0
    assert sleeps == []


async def test_response_format_can_be_left_out_for_endpoints_that_reject_it() -> None:
    client, fake, _ = make_client([completion(GOOD)], response_format="none")
    await client.call("judge-1", [], parse_verdict)
    assert "response_format" not in fake.requests[0]


async def test_rate_limit_is_retried_after_at_least_retry_after() -> None:
    client, _, sleeps = make_client([status_error(429, {"retry-after": "7"}), completion(GOOD)])
    reply = await client.call("judge-1", [], parse_verdict)
    assert reply.cost.attempts == 2 and sleeps and sleeps[0] >= 7


async def test_retry_after_is_capped() -> None:
    client, _, sleeps = make_client(
        [status_error(429, {"retry-after": "3600"}), completion(GOOD)], retry_max_seconds=10.0
    )
    await client.call("judge-1", [], parse_verdict)
    assert sleeps == [10.0]


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (status_error(429), RATE_LIMITED),
        (status_error(500), ENDPOINT_ERROR),
        (openai.APITimeoutError(request=REQUEST), TIMEOUT),
        (openai.APIConnectionError(request=REQUEST), ENDPOINT_ERROR),
        (ValueError("Expecting ',' delimiter"), ENDPOINT_ERROR),  # a 200 with a cut JSON body
    ],
)
async def test_each_failure_kind_is_retried_then_typed(failure: Exception, error_type: int) -> None:
    client, fake, sleeps = make_client([failure] * 3)
    with pytest.raises(JudgeCallFailed) as caught:
        await client.call("judge-1", [], parse_verdict)
    assert caught.value.error_type == error_type
    assert caught.value.cost.attempts == 3 and len(fake.requests) == 3 and len(sleeps) == 2
    assert "sk-" not in caught.value.message


async def test_unparseable_answers_are_retried_and_their_tokens_counted() -> None:
    client, _, _ = make_client([completion("no idea"), completion("still no", 50, 5), completion("nope", 50, 5)])
    with pytest.raises(JudgeCallFailed) as caught:
        await client.call("judge-1", [], parse_verdict)
    assert caught.value.error_type == UNPARSEABLE
    assert (caught.value.cost.prompt_tokens, caught.value.cost.completion_tokens) == (200, 30)


async def test_a_refused_key_is_not_retried() -> None:
    client, fake, _ = make_client([status_error(401)])
    with pytest.raises(JudgeCallFailed) as caught:
        await client.call("judge-1", [], parse_verdict)
    assert caught.value.error_type == CONFIGURATION and len(fake.requests) == 1


async def test_a_call_that_outlives_its_timeout_is_a_timeout() -> None:
    async def never() -> Any:
        await asyncio.sleep(60)

    client, _, _ = make_client([never], timeout_seconds=0.01, max_attempts=1)
    client._timeout = -0.99  # the guard timeout is timeout + 1 s: make it fire at once
    with pytest.raises(JudgeCallFailed) as caught:
        await client.call("judge-1", [], parse_verdict)
    assert caught.value.error_type == TIMEOUT


def test_backoff_is_jittered_exponential_and_capped() -> None:
    highest = lambda low, high: high  # noqa: E731
    backoff = Backoff(0.5, 3.0, Jitter.FULL, draw=highest)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert Backoff(0.5, 3.0, Jitter.FULL, draw=lambda low, high: low).delay(1) == 0.0
    assert Backoff(0.5, 30.0, Jitter.FULL, draw=highest).delay(1, at_least=4.0) == 4.0


async def test_breaker_opens_after_consecutive_failures_and_calls_wait() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, open_seconds=5.0, clock=lambda: now[0])
    assert await breaker.acquire() is False
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and breaker.times_opened == 1
    waiter = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done() and breaker.waiting == 1  # waits instead of failing
    now[0] = 5.0  # cool-down over: the next caller is the probe
    breaker._notify()
    assert await asyncio.wait_for(waiter, 1) is True
    assert breaker.state == "half_open"
    second = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0.01)
    assert not second.done()  # one probe at a time
    breaker.record_success()
    assert await asyncio.wait_for(second, 1) is False and breaker.state == "closed"


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=1, open_seconds=1.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 1.0
    assert await breaker.acquire() is True
    breaker.record_failure()
    assert breaker.state == "open" and breaker.times_opened == 2


async def test_a_rate_limited_probe_lets_another_caller_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=1, open_seconds=1.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 1.0
    assert await breaker.acquire() is True
    other = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0.01)
    breaker.record_neutral(was_probe=True)
    assert await asyncio.wait_for(other, 1) is True


async def test_client_waits_on_an_open_breaker_and_succeeds_after_it() -> None:
    breaker = CircuitBreaker(threshold=2, open_seconds=0.05)
    client, fake, _ = make_client(
        [status_error(500), status_error(500), completion(GOOD)], breaker=breaker, max_attempts=5
    )
    reply = await client.call("judge-1", [], parse_verdict)
    assert reply.parsed.score == 4 and breaker.times_opened == 1 and breaker.state == "closed"
