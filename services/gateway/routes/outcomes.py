"""How a failed run is told to the client and recorded: a stable error type per kind of failure.

LLM failures answer 502 (the gateway worked; the model behind it did not), other node failures
500, a run past ``request_timeout_seconds`` 504. The client learns the kind, the node and the
LLM error class (``RateLimitError``); the response event also gets the (redacted) message.
"""

from __future__ import annotations

from typing import Any

from services.gateway.routes.errors import ApiError
from services.gateway.routes.recording import InferenceRecorder
from shared.flow import LlmCallError, NodeExecutionError
from shared.flow.telemetry import redact

_TIMEOUTS = {"APITimeoutError", "TimeoutError", "ReadTimeout", "ConnectTimeout"}
_CONNECTION = {"APIConnectionError", "ConnectionError", "ClientConnectionError", "ConnectError"}


def llm_error_kind(exc: LlmCallError) -> str:
    """``llm_rate_limited``, ``llm_timeout``, ``llm_unreachable``, ``llm_server_error``,
    ``llm_request_rejected`` or ``llm_bad_response``."""
    status = exc.status_code
    if status == 429 or exc.error_type == "RateLimitError":
        return "llm_rate_limited"
    if exc.error_type in _TIMEOUTS:
        return "llm_timeout"
    if exc.error_type in _CONNECTION:
        return "llm_unreachable"
    if status is not None and status >= 500:
        return "llm_server_error"
    if status is not None and status >= 400:
        return "llm_request_rejected"
    return "llm_bad_response"  # the endpoint answered, but not with a completion we could read


def run_failed(recorder: InferenceRecorder, exc: NodeExecutionError, *, time_to_first_token_ms: float | None = None
               ) -> ApiError:
    """Publish the response event (status error) and return the error to answer with."""
    extra: dict[str, Any] = {"node": exc.node}
    if isinstance(exc, LlmCallError):
        kind, status = llm_error_kind(exc), 502
        message = f"the LLM call of node {exc.node!r} failed: {exc.error_type}"
        if exc.status_code is not None:
            message += f" (HTTP {exc.status_code})"
            extra["llm_status"] = exc.status_code
        extra["llm_error"] = exc.error_type
    else:
        kind, status = "node_failed", 500
        message = f"node {exc.node!r} failed: {exc.error_type}"
    recorder.respond("error", llm_calls=exc.llm_calls, error_type=kind, error_message=redact(str(exc)),
                     time_to_first_token_ms=time_to_first_token_ms)
    return ApiError(status, kind, message, extra=extra)


def run_timed_out(recorder: InferenceRecorder, timeout: float, llm_calls: Any = (),
                  time_to_first_token_ms: float | None = None) -> ApiError:
    message = f"the flow did not finish within {timeout:g} s"
    recorder.respond("error", llm_calls=llm_calls, error_type="request_timeout", error_message=message,
                     time_to_first_token_ms=time_to_first_token_ms)
    return ApiError(504, "request_timeout", message)


def run_crashed(recorder: InferenceRecorder, exc: BaseException, llm_calls: Any = ()) -> ApiError:
    """A bug in the gateway or the runtime: recorded as an error, answered 500 without details."""
    recorder.respond("error", llm_calls=llm_calls, error_type="internal_error",
                     error_message=redact(f"{type(exc).__name__}: {exc}"))
    return ApiError(500, "internal_error", "the gateway failed to run the flow; see its logs")
