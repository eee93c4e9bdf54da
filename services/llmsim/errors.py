"""Error answers in OpenAI's shape, so clients map them to their usual exception types."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web


def openai_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)
