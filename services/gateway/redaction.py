"""A deployment's ``redaction``: named flow inputs and outputs replaced before they enter events.

The flow and the client see the real values; the request and response events (and so Kafka,
the store and the judges) see :data:`REDACTED`. A streamed output that is redacted still
publishes its token chunks, with their counts and offsets (useful for throughput) but no text.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

REDACTED = "[REDACTED]"


def redact_fields(values: Mapping[str, Any], names: Collection[str]) -> dict[str, Any]:
    """A copy of ``values`` with each field named in ``names`` (and present) replaced."""
    if not names:
        return dict(values)
    return {key: (REDACTED if key in names else value) for key, value in values.items()}
