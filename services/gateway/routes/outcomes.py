"""How a failed run is told to the client and recorded: a stable error type per kind of failure.

LLM failures answer 502 (the gateway worked; the model behind it did not), other node failures
500, a run past ``request_timeout_seconds`` 504. A failed node is told in one text, the same
for the client, the trace (the workflow span's ``exception.message``) and the response event's
``error_message``: ``node 'answer': RateLimitError: <message>``, secrets redacted
(:func:`shared.flow.telemetry.redact`). Beside it the client gets ``node``,
``exception_type`` and ``exception_message`` as fields to act on without parsing the text.
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
    message = failure_text(exc)
    extra: dict[str, Any] = {"node": exc.node, "exception_type": exc.error_type,
                             "exception_message": redact(exc.message)}
    if isinstance(exc, LlmCallError):
        kind, status = llm_error_kind(exc), 502
        if exc.status_code is not None:
            extra["llm_status"] = exc.status_code
        extra["llm_error"] = exc.error_type  # kept for clients written before exception_type
    else:
        kind, status = "node_failed", 500
    recorder.respond("error", llm_calls=exc.llm_calls, error_type=kind, error_message=message,
                     time_to_first_token_ms=time_to_first_token_ms)
    return ApiError(status, kind, message, extra=extra)


def failure_text(exc: NodeExecutionError) -> str:
    """``node 'answer': RateLimitError: <message>``, redacted: what the client, trace and event say."""
    return redact(str(exc))


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
