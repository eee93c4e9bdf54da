"""One proxied call, from the client's body to the upstream's request: checks, model, body, inputs.

Checks, in order (nothing is published for a refused request): the key names a proxy
deployment (401), rate limit (429), body within the deployment's ``proxy.max_body_bytes`` (413)
and a JSON object (400), the variant header (403, 400), a model (400). The body goes upstream
as the client sent it, byte for byte, unless the proxy must change it: a variant's ``model``
(or an Azure deployment path for a non-Azure upstream) sets ``model``, and a streamed chat or
completion call gets ``stream_options.include_usage`` when ``proxy.stream_usage`` is on and the
client did not ask for usage itself (the proxy then drops that usage chunk from the relay).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.gateway.routes.common import VARIANT_HEADER, authorize_proxy, sent_as
from services.gateway.routes.errors import ApiError
from services.gateway.routes.variants import choose_variant
from services.gateway.runtime import ProxyRuntime
from shared.deployments import Variant
from shared.jsontext import has_lone_surrogate
from shared.upstream import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES

# The span's gen_ai.operation.name and the usage record's node, per operation.
OPERATION_NAMES = {RESPONSES: "responses", CHAT: "chat", COMPLETIONS: "text_completion", EMBEDDINGS: "embeddings"}


@dataclass(frozen=True)
class ProxyCall:
    """A call past the checks: where it goes and what it sends."""

    runtime: ProxyRuntime
    variant: Variant
    operation: str  # upstream.RESPONSES, CHAT, COMPLETIONS or EMBEDDINGS
    client_body: dict[str, Any]
    model: str  # what the upstream is asked for (the variant's model, else the client's)
    payload: bytes  # the bytes sent upstream
    streaming: bool
    drop_usage_chunk: bool
    size: int

    @property
    def operation_name(self) -> str:
        return OPERATION_NAMES[self.operation]


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body within ``limit`` bytes (413 past it). The app's client_max_size is for the
    score routes; a proxy deployment has its own limit (images make large bodies)."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise _too_large(limit)
        # The HTTP parser stops the stream at Content-Length: read to its end at once.
        return await request.content.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():  # chunked: counted as it comes
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is larger than this deployment's limit of {limit} bytes "
                    "(proxy.max_body_bytes)")


def parse_body(raw: bytes, request: web.Request | None = None) -> dict[str, Any]:
    """The body as a JSON object (400 otherwise); ``request``: its declared type is named in the
    message when the body is not JSON (common.sent_as, looked at only then)."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the body is empty: send a JSON object")
    try:
        body = json.loads(raw.decode("utf-8-sig"))
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    except ValueError as exc:
        declared = sent_as(request) if request is not None else ""
        raise ApiError(400, "invalid_json", f"the body is not valid JSON{declared}: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", f"the body must be a JSON object, not {type(body).__name__}")
    # Strict UTF-8 cannot carry a surrogate: only a \u escape makes one, so most bodies skip the walk.
    if b"\\u" in raw and has_lone_surrogate(body):
        raise ApiError(400, "invalid_json", "a string holds a lone UTF-16 surrogate escape")
    return body


async def accept_call(request: web.Request, operation: str, path_model: str | None = None) -> ProxyCall:
    """The checks of the module docstring; ``path_model``: the Azure route's deployment name."""
    runtime, _ = authorize_proxy(request)
    proxy = runtime.deployment.proxy
    assert proxy is not None  # a proxy runtime's deployment has its proxy section
    raw = await read_body(request, proxy.max_body_bytes)
    body = parse_body(raw, request)
    variant = choose_variant(request, runtime, (VARIANT_HEADER,))
    client_model = path_model if path_model is not None else body.get("model")
    if not isinstance(client_model, str) or not client_model.strip():
        raise ApiError(400, "invalid_input", "model: a model name is required", field="model")
    model = variant.model or client_model
    changes: dict[str, Any] = {}
    sent_model = body.get("model")
    if (sent_model is not None or not runtime.upstream.is_azure) and sent_model != model:
        changes["model"] = model
    streaming = body.get("stream") is True
    drop_usage_chunk = False
    if streaming and operation in (CHAT, COMPLETIONS) and proxy.stream_usage:
        options = body.get("stream_options")
        if options is None or (isinstance(options, dict) and options.get("include_usage") is not True):
            changes["stream_options"] = {**(options or {}), "include_usage": True}
            drop_usage_chunk = True
    payload = raw if not changes else json.dumps({**body, **changes}, ensure_ascii=False).encode()
    return ProxyCall(runtime, variant, operation, body, model, payload, streaming, drop_usage_chunk, len(raw))
