"""The two errors of the event codec: one for producers, one for consumers."""

from __future__ import annotations

from typing import Literal

# Short, stable reasons: a consumer counts decode failures by reason and puts the reason on the
# dead-lettered record, so these strings are part of the operational contract.
DecodeFailure = Literal[
    "missing-event-type",
    "unknown-event-type",
    "missing-schema-version",
    "unsupported-schema-version",
    "malformed-header",
    "empty-body",
    "malformed-body",
    "invalid-event",
]


class InvalidEventError(ValueError):
    """An event (or a value put into one) breaks the contract; raised before anything is sent."""


class EventDecodeError(Exception):
    """A Kafka record cannot be turned into a valid event. The only error ``decode`` raises.

    ``reason`` is one of :data:`DecodeFailure`, short enough for a metric label or a
    dead-letter header; ``detail`` says what exactly was wrong, for logs.
    """

    # Parser messages can quote the whole bad input; a log line or DLQ header must stay small.
    MAX_DETAIL = 300

    def __init__(self, reason: DecodeFailure, detail: str) -> None:
        detail = detail if len(detail) <= self.MAX_DETAIL else detail[: self.MAX_DETAIL] + "..."
        super().__init__(f"{reason}: {detail}")
        self.reason: DecodeFailure = reason
        self.detail = detail
