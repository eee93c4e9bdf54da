"""A ``type: proxy`` deployment's ``proxy`` section: the connection its calls pass through to, where
the judged context comes from, and the bounds on what is recorded.

Apart from schema.py: only the gateway's proxy reads it; the columns a proxy's judges read are
fixed (PROXY_COLUMNS), since a proxy records its calls in fixed fields (docs/proxy.md).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from shared.deployments.base import CONNECTION_NAME_PATTERN, ConfigModel, Count
from shared.deployments.evaluation import ColumnMapping

PROXY_COLUMNS = ColumnMapping(question="inputs.question", answer="outputs.answer", context="inputs.context")
SYSTEM_MESSAGE = "system_message"
NO_CONTEXT = "none"
BODY_FIELD_PATTERN = r"^body(\.[A-Za-z_][A-Za-z0-9_-]{0,127}){1,8}$"


class Proxy(ConfigModel):
    """A ``type: proxy`` deployment: OpenAI-compatible calls passed through to one connection."""

    connection: str = Field(pattern=CONNECTION_NAME_PATTERN)
    context: str = Field(
        SYSTEM_MESSAGE,
        description="Where the judged context comes from: system_message (chat's system/developer "
        "messages, the Responses API's instructions), none, or body.<field>[.<field>...] (a field "
        "of the request body, e.g. body.metadata.context).",
    )
    max_body_bytes: Count = Field(20 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)
    recorded_text_max_chars: Count = Field(16_384, ge=64, le=1_000_000)
    stream_usage: bool = Field(
        True,
        description="Ask the upstream for usage on streamed chat and completion calls "
        "(stream_options.include_usage) when the client did not; the client never sees that chunk.",
    )

    @field_validator("context")
    @classmethod
    def _context_source(cls, value: str) -> str:
        if value in (SYSTEM_MESSAGE, NO_CONTEXT) or re.match(BODY_FIELD_PATTERN, value):
            return value
        raise ValueError(f"{value!r} is not system_message, none or body.<field>[.<field>...]")

    def context_path(self) -> tuple[str, ...] | None:
        """The body field path of ``context: body.a.b`` (("a", "b")), None for the other choices."""
        return tuple(self.context.split(".")[1:]) if self.context.startswith("body.") else None
