"""Small checks and conversions shared by the event and span decoders.

Postgres refuses a NUL character in text and jsonb, and JSON has no NaN: either would fail
the whole batch transaction, so they are dealt with here, per record, before any SQL runs.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Names and ids end up in btree keys; Postgres caps an index entry near 2.7 kB.
MAX_ID_CHARS = 200
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_REPLACEMENT = "\ufffd"


class InvalidValue(ValueError):
    """A field of an otherwise decodable record cannot be stored; dead-lettered as invalid-value."""


def clean_text(text: str, limit: int | None = None) -> str:
    """``text`` with NULs replaced (Postgres rejects them), cut to ``limit`` characters."""
    if "\x00" in text:
        text = text.replace("\x00", _REPLACEMENT)
    if limit is not None and len(text) > limit:
        text = text[:limit]
    return text


def identifier(value: str, field: str, *, required: bool = True) -> str:
    """A name or id that goes into a key: at most MAX_ID_CHARS, no NUL."""
    if required and not value:
        raise InvalidValue(f"{field} is empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidValue(f"{field} is longer than {MAX_ID_CHARS} characters")
    if "\x00" in value:
        raise InvalidValue(f"{field} contains a NUL character")
    return value


def clean_json(value: Any) -> Any:
    """A JSON value with NULs replaced in every string and key."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """Compact JSON for a jsonb column; raises InvalidValue on NaN or infinity."""
    try:
        text = _dumps(value)
        # json escapes a NUL as \u0000, which jsonb refuses. Rare, so clean only when seen (a
        # literal backslash-u0000 in a string also matches: harmless, it is cleaned as well).
        return _dumps(clean_json(value)) if "\\u0000" in text else text
    except ValueError as exc:
        raise InvalidValue(f"not storable as JSON: {exc}") from None


def _unsupported(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder() -> Any:
    """Compact JSON, NaN refused. The stdlib's C encoder called directly when there is one:
    ``JSONEncoder.encode`` builds a new one per call behind two Python frames, which doubles
    the cost for the small objects written here (two or three per event). No circular check:
    the values are trees built from decoded protobufs."""
    if c_make_encoder is None:  # a Python without the _json accelerator
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    encode = c_make_encoder(None, _unsupported, encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(encode(value, 0))


_dumps = _encoder()


def trace_id_of(traceparent: str) -> str | None:
    """The trace id (32 hex) of a W3C traceparent, or None when absent or malformed."""
    match = _TRACEPARENT.match(traceparent)
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def uuid7_time(text: str) -> datetime | None:
    """The creation time embedded in a UUIDv7 (RFC 9562: 48-bit Unix milliseconds), or None
    when ``text`` is not a UUIDv7."""
    try:
        parsed = uuid.UUID(text)
    except (ValueError, TypeError):
        return None
    if parsed.version != 7:
        return None
    return EPOCH + timedelta(milliseconds=parsed.int >> 80)


def from_unix_nanos(nanos: int) -> datetime:
    # Postgres keeps microseconds; integer maths so equal inputs give equal keys. Positional
    # timedelta arguments: a third cheaper than the keyword, and this runs twice per span.
    return EPOCH + timedelta(0, 0, nanos // 1000)


def minute_of(moment: datetime) -> datetime:
    """The UTC minute a moment falls in: the rollups' time key."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # Positional constructor: a third of replace(second=0, microsecond=0)'s keyword parsing.
    return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, 0, 0, UTC)
