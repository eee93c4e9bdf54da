"""Re-judge commands and progress records to Kafka records and back.

They are not events about a request (no EventMeta), so they stay out of ``codec.EVENT_TYPES``
and its Event union; they carry the same type and schema-version headers, and a record that
does not decode raises EventDecodeError like any other.
"""

from __future__ import annotations

from typing import TypeVar

from shared.events.codec import SCHEMA_VERSION, EncodedEvent
from shared.events.errors import EventDecodeError
from shared.events.gen.promptpulse.v1 import events_pb2 as _pb
from shared.events.headers import EVENT_TYPE_HEADER, SCHEMA_VERSION_HEADER, Headers, event_type

RejudgeCommand = _pb.RejudgeCommand
RejudgeProgress = _pb.RejudgeProgress

COMMAND_TYPE = "rejudge.command"
PROGRESS_TYPE = "rejudge.progress"
_TYPES: dict[str, type] = {COMMAND_TYPE: RejudgeCommand, PROGRESS_TYPE: RejudgeProgress}
M = TypeVar("M", RejudgeCommand, RejudgeProgress)


def encode_rejudge(message: RejudgeCommand | RejudgeProgress) -> EncodedEvent:
    if not message.rejudge_id:
        raise ValueError(f"{type(message).__name__} has no rejudge_id")
    name = COMMAND_TYPE if isinstance(message, RejudgeCommand) else PROGRESS_TYPE
    headers = [(EVENT_TYPE_HEADER, name.encode()), (SCHEMA_VERSION_HEADER, SCHEMA_VERSION.encode())]
    return EncodedEvent(message.SerializeToString(deterministic=True), headers)


def decode_rejudge(value: bytes | None, headers: Headers, expected: type[M]) -> M:
    """The command or progress record in a Kafka record; EventDecodeError when it is not one."""
    name = event_type(headers)
    if _TYPES.get(name or "") is not expected:
        raise EventDecodeError("unknown-event-type", f"expected {expected.__name__}, got {name!r}")
    if not value:
        raise EventDecodeError("empty-body", f"{name} record has no value")
    message = expected()
    try:
        message.ParseFromString(bytes(value))
    except Exception as exc:  # protobuf's DecodeError, or other types from its backends
        raise EventDecodeError("malformed-body", f"{name}: {exc}") from exc
    if not message.rejudge_id:
        raise EventDecodeError("invalid-event", f"{name} has no rejudge_id")
    return message


__all__ = ["RejudgeCommand", "RejudgeProgress", "decode_rejudge", "encode_rejudge"]
