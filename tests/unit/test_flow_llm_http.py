"""The flow runtime's LLM endpoint, as pure units: which failures it retries and after what wait,
how an answer's status becomes the openai exception's name and text, and how the processor's
circuit breaker reads those errors. Over the wire: tests/integration/test_proxy_wire_golden.py."""

from __future__ import annotations

import pytest

from services.processor.evaluation.judge.client import (
    CONFIGURATION,
    ENDPOINT_ERROR,
    RATE_LIMITED,
    TIMEOUT,
    classify,
)
from shared.flow.llm_http import LlmHttpError, retry_wait, status_error
from shared.retry import Backoff


def backoff() -> Backoff:
    return Backoff(initial=0.5, cap=8.0)  # no jitter: the waits are exact


@pytest.mark.parametrize(("status", "headers", "wait"), [
    (429, {"retry-after": "3"}, 3.0),  # the server's wait
    (429, {"retry-after-ms": "250"}, 0.25),
    (429, {"retry-after": "0"}, 0.5),  # none asked: the back-off's
    (429, {}, 0.5),
    (429, {"retry-after": "121"}, None),  # longer than 120 s: not retried at all
    (500, {}, 0.5),
    (503, {"retry-after": "2"}, 2.0),
    (408, {}, 0.5),
    (409, {}, 0.5),
    (400, {}, None),
    (404, {}, None),
    (400, {"x-should-retry": "true"}, 0.5),  # the server decides
    (500, {"x-should-retry": "false"}, None),
])
def test_which_answers_are_retried_and_after_what_wait(status: int, headers: dict[str, str], wait: float | None) -> None:
    assert retry_wait(status_error(status, b"", headers), backoff()) == wait


def test_timeouts_and_broken_connections_are_retried_with_a_doubling_wait() -> None:
    waits = backoff()
    failure = LlmHttpError("APITimeoutError", "Request timed out.")
    assert [retry_wait(failure, waits) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


@pytest.mark.parametrize(("status", "body", "error_type", "message"), [
    (429, b'{"error": {"message": "Rate limit reached.", "type": "requests"}}', "RateLimitError",
     "Error code: 429 - Rate limit reached."),
    (500, b'{"message": "boom"}', "InternalServerError", "Error code: 500 - boom"),
    (502, b"<html>bad gateway</html>", "InternalServerError", "Error code: 502"),
    (400, b'{"error": {"message": ""}}', "BadRequestError", "Error code: 400"),
    (401, b"{}", "AuthenticationError", "Error code: 401"),
    (403, b"", "PermissionDeniedError", "Error code: 403"),
    (404, b"", "NotFoundError", "Error code: 404"),
    (409, b"", "ConflictError", "Error code: 409"),
    (422, b"", "UnprocessableEntityError", "Error code: 422"),
    (418, b"", "APIStatusError", "Error code: 418"),
])
def test_an_answers_status_names_the_error_as_the_openai_client_did(
    status: int, body: bytes, error_type: str, message: str,
) -> None:
    error = status_error(status, body)
    assert (error.error_type, error.status_code, error.message) == (error_type, status, message)


def test_a_key_echoed_in_an_error_message_is_redacted() -> None:
    error = status_error(401, b'{"error": {"message": "Incorrect API key provided: sk-proj-abcdefghijklmnop."}}')
    assert "sk-proj" not in error.message and "[redacted]" in error.message


def test_the_judge_breaker_reads_the_endpoints_errors_as_the_openai_clients() -> None:
    limited = classify(status_error(429, b"", {"retry-after": "7"}))
    assert (limited.error_type, limited.health, limited.retry_after) == (RATE_LIMITED, "neutral", 7.0)
    assert (classify(status_error(503, b"")).error_type, classify(status_error(503, b"")).health) == (
        ENDPOINT_ERROR, "failure")
    assert classify(status_error(401, b"")).error_type == CONFIGURATION
    timed_out = classify(LlmHttpError("APITimeoutError", "Request timed out."))
    assert (timed_out.error_type, timed_out.health) == (TIMEOUT, "failure")
    unreachable = classify(LlmHttpError("APIConnectionError", "Connection error."))
    assert (unreachable.error_type, unreachable.health, unreachable.retryable) == (ENDPOINT_ERROR, "failure", True)
    in_stream = classify(LlmHttpError("APIError", "The model produced invalid content."))
    assert in_stream.error_type == ENDPOINT_ERROR and "APIError" in in_stream.message
