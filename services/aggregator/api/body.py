"""Reading a JSON request body: any body a client can send is a value or a 4xx naming the problem.

Too large (413, before reading when Content-Length says so), empty, not UTF-8, not JSON, NaN or
Infinity (not JSON, and the answer could not be written back), nested deeper than the parser's
recursion limit (a few KiB of ``[`` is enough), or holding a lone UTF-16 surrogate (``"\ud800"``
is valid JSON syntax but no character: Postgres refuses it in json and text): each is a 400 with
a message, never an exception that would end as a 500. The declared content type is not checked: the body is read
as JSON whatever it says, and a failure names the declared type when it was not JSON.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.aggregator.api.errors import ApiError
from shared.jsontext import has_lone_surrogate

MAX_BODY_BYTES = 1 << 20  # aiohttp's default client_max_size, which bounds chunked bodies too


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _sent_as(request: web.Request) -> str:
    kind = request.content_type  # application/octet-stream when the header is missing
    if "Content-Type" not in request.headers or kind == "application/json" or kind.endswith("+json"):
        return ""
    return f" (sent as {kind}; send application/json)"


async def read_json(request: web.Request, *, field: str, shape: str, limit: int = MAX_BODY_BYTES) -> Any:
    """The body as JSON; ``shape`` shows what is expected (``{"monitors": [...]}``) in messages."""
    too_large = ApiError(413, "body_too_large", f"the body may be at most {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(raw) > limit:
        raise too_large
    if not raw.strip():
        raise ApiError(400, "invalid_body", f"the body is empty: send JSON, {shape}", field=field)
    try:
        # Strict UTF-8 (a BOM is dropped): json.loads(bytes) would let encoded surrogates through.
        value = json.loads(raw.decode("utf-8-sig"), parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "invalid_body", "the body is nested too deeply", field=field) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "invalid_body", f"the body is not valid JSON{_sent_as(request)}: {exc}; send {shape}",
                       field=field) from None
    if has_lone_surrogate(value):
        raise ApiError(400, "invalid_body", "the body is not valid JSON text: a string holds a lone UTF-16 "
                       "surrogate escape (\\ud800-\\udfff without its pair)", field=field)
    return value

