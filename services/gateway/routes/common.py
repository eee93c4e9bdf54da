"""What the score and feedback endpoints check first, in this order: the deployment exists (404)
and loads (503 deployment_unavailable), the key is one of its keys (401), the key is within its
rate limit (429), the body is JSON within the size limit (413, 400): UTF-8, no NaN, not nested
past the parser's limit, no lone surrogate.
Nothing is published for a request refused here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from services.gateway.appkeys import DEPLOYMENTS, METRICS, RATE_LIMITER, SETTINGS
from services.gateway.auth import authenticate, key_owner
from services.gateway.ratelimit import retry_after_header
from services.gateway.registry import DeploymentRuntime
from services.gateway.routes.errors import ApiError
from services.gateway.runtime import ProxyRuntime, Runtime
from shared.apikeys import ApiKeyRecord
from shared.jsontext import has_lone_surrogate
from shared.sampling import is_sampled

RUN_HEADER = "x-promptpulse-run"
VARIANT_HEADER = "x-promptpulse-variant"
CLIENT_REQUEST_ID_HEADER = "x-request-id"
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
CLIENT_REQUEST_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}$")  # visible ASCII


def accepted_media_types(request: web.Request) -> set[str]:
    """The media types of ``Accept``, lowercased, parameters dropped; none sent counts as ``*/*``.

    Every ``Accept`` header counts, and media types are case-insensitive (RFC 9110 §12.5.1).
    """
    kinds = {part.split(";", 1)[0].strip().lower() for value in request.headers.getall("Accept", [])
             for part in value.split(",")}
    kinds.discard("")
    return kinds or {"*/*"}


def find_deployment(request: web.Request) -> DeploymentRuntime:
    name = request.match_info["deployment"]
    deployments = request.app[DEPLOYMENTS]
    runtime = deployments.get(name)
    if runtime is None and deployments.unavailable(name) is not None:
        # Its files do not load: the caller learns that much; the problems are for operators
        # (GET /admin/deployments and the log), since they hold paths and file contents.
        raise ApiError(503, "deployment_unavailable", f"deployment {name[:100]!r} is not available: "
                       "its configuration does not load")
    if runtime is None and deployments.get_proxy(name) is not None:
        raise ApiError(404, "proxy_deployment", f"deployment {name[:100]!r} is a proxy (type: proxy): call its "
                       "OpenAI-compatible routes, such as POST /v1/chat/completions, with its key (docs/proxy.md)")
    if runtime is None:
        # The name is the client's text: quoted back, never used as a metric label.
        raise ApiError(404, "unknown_deployment", f"no deployment named {name[:100]!r}")
    return runtime


def find_any_deployment(request: web.Request) -> Runtime:
    """A flow or proxy deployment by the URL's name, for routes both serve (feedback)."""
    proxy = request.app[DEPLOYMENTS].get_proxy(request.match_info["deployment"])
    return proxy if proxy is not None else find_deployment(request)


def authorize(request: web.Request, runtime: Runtime) -> ApiKeyRecord:
    record = authenticate(request.headers, runtime.deployment.api_keys)
    if record is None:
        raise _unauthorized(request, runtime.name)
    return _within_rate_limit(request, runtime, record)


# The auth_failures label of a /score request whose key names no deployment (no name looks like it).
UNKNOWN_DEPLOYMENT_LABEL = "(unknown)"


def authorize_by_key(request: web.Request) -> tuple[DeploymentRuntime, ApiKeyRecord]:
    """``POST /score``: the deployment is the one the presented key belongs to (401 if none)."""
    registry = request.app[DEPLOYMENTS].current
    runtimes = registry.deployments.values()
    found = key_owner(request.headers, ((rt, rt.deployment.api_keys) for rt in runtimes))
    if found is None:
        raise _unauthorized(request, UNKNOWN_DEPLOYMENT_LABEL)
    runtime, record = found
    return runtime, _within_rate_limit(request, runtime, record)


def authorize_any_by_key(request: web.Request) -> tuple[Runtime, ApiKeyRecord]:
    """The deployment, flow or proxy, the presented key belongs to (401 if none): for routes that
    every kind of deployment serves, such as OTLP ingest."""
    registry = request.app[DEPLOYMENTS].current
    runtimes: list[Runtime] = [*registry.deployments.values(), *registry.proxies.values()]
    found = key_owner(request.headers, ((rt, rt.deployment.api_keys) for rt in runtimes))
    if found is None:
        raise _unauthorized(request, UNKNOWN_DEPLOYMENT_LABEL)
    runtime, record = found
    return runtime, _within_rate_limit(request, runtime, record)


def authorize_proxy(request: web.Request) -> tuple[ProxyRuntime, ApiKeyRecord]:
    """The OpenAI-compatible routes: the proxy deployment the presented key belongs to (401 if none;
    a flow deployment's key is refused the same way, since its calls go to /score)."""
    registry = request.app[DEPLOYMENTS].current
    found = key_owner(request.headers, ((rt, rt.deployment.api_keys) for rt in registry.proxies.values()))
    if found is None:
        raise _unauthorized(request, UNKNOWN_DEPLOYMENT_LABEL)
    runtime, record = found
    return runtime, _within_rate_limit(request, runtime, record)


def _unauthorized(request: web.Request, label: str) -> ApiError:
    request.app[METRICS].auth_failures[label] += 1
    return ApiError(
        401, "unauthorized", "missing or invalid API key (send Authorization: Bearer <key> or api-key: <key>)",
        headers={"WWW-Authenticate": 'Bearer realm="promptpulse"'},
    )


def _within_rate_limit(request: web.Request, runtime: Runtime, record: ApiKeyRecord) -> ApiKeyRecord:
    metrics = request.app[METRICS]
    limit = record.rate_limit_per_minute or request.app[SETTINGS].gateway.default_rate_limit_per_minute
    wait = request.app[RATE_LIMITER].check(runtime.name, record.id, limit)
    if wait is not None:
        metrics.rate_limited[runtime.name] += 1
        retry_after = retry_after_header(wait)
        raise ApiError(
            429, "rate_limited", f"this key allows {limit} requests per minute; retry in {retry_after} s",
            headers={"Retry-After": retry_after},
        )
    return record


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_json(request: web.Request) -> tuple[Any, int]:
    """The JSON body and its size in bytes; ApiError 413 or 400 naming what is wrong."""
    limit = request.app[SETTINGS].gateway.max_body_bytes
    too_large = ApiError(413, "body_too_large", f"the body is larger than the limit of {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()  # client_max_size enforces the limit on chunked bodies
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the body is empty: send a JSON object")
    try:
        # Strict UTF-8 (a BOM is dropped): json.loads(bytes) would let encoded surrogates through.
        body = json.loads(raw.decode("utf-8-sig"), parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        # The body is read as JSON whatever its declared type; a wrong type is named as the likely cause.
        raise ApiError(400, "invalid_json", f"the body is not valid JSON{sent_as(request)}: {exc}") from None
    if b"\\u" in raw and has_lone_surrogate(body):  # strict UTF-8 has none: only a \u escape makes one
        # "\ud800" is valid JSON syntax but no character: no event (protobuf) could carry it.
        raise ApiError(400, "invalid_json", "the body is not valid JSON text: a string holds a lone UTF-16 "
                       "surrogate escape (\\ud800-\\udfff without its pair)")
    return body, len(raw)



def sent_as(request: web.Request) -> str:
    """Bodies are read as JSON whatever their declared type; when one is not JSON, a declared
    type other than JSON is named as the likely cause (a form post, a plain-text body)."""
    kind = request.content_type  # application/octet-stream when the header is missing
    if "Content-Type" not in request.headers or kind == "application/json" or kind.endswith("+json"):
        return ""
    return f" (sent as {kind}; send application/json)"


def single_header(request: web.Request, name: str) -> str | None:
    """The header's one value, or None when absent; ApiError 400 when it is given more than once
    (proxies and clients disagree on which copy wins, so no copy is picked silently)."""
    values = request.headers.getall(name, ())
    if len(values) > 1:
        raise ApiError(400, "invalid_header", f"{name} is given {len(values)} times: send it once", field=name)
    return values[0] if values else None


def optional_header(request: web.Request, name: str, pattern: re.Pattern[str], rule: str) -> str:
    value = single_header(request, name)
    if value is None:
        return ""
    if not pattern.match(value):
        raise ApiError(400, "invalid_header", f"{name} must be {rule}", field=name)
    return value


def keeps_texts(runtime: Runtime, request_id: str, run_id: str | None) -> bool:
    """Whether this request's texts are kept: sampled for judging, or part of a batch run.

    The aggregator keeps inputs and outputs by the same rule (shared/sampling.py); anything else
    that may quote them, such as what a Python node prints, follows it too.
    """
    evaluation = runtime.deployment.evaluation
    return bool(run_id) or is_sampled(request_id, evaluation.sampling_rate if evaluation is not None else 0.0)


async def send_whole(response: web.Response, request: web.Request) -> None:
    """Write ``response`` now (aiohttp then finds it sent): recording the answer, the spans' end
    and the middlewares' work no longer delay it (docs/proxy.md, "Throughput and tracing";
    docs/gateway.md, "Overhead")."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left after the answer was complete: the outcome stands
