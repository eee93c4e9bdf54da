"""Query parameters and path parts, parsed strictly: anything wrong is a 400 naming it.

Unknown and repeated parameters are refused too, so a misspelt ``stpe=5m`` is an error instead
of silently giving the default.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from aiohttp import web

from services.aggregator.api.errors import bad_parameter
from shared.deployments import parse_duration
from shared.deployments.base import MONITOR_ID_PATTERN, NAME_PATTERN, VARIANT_ID_PATTERN
from shared.jsontext import has_lone_surrogate

_NAME = re.compile(NAME_PATTERN)
_VARIANT = re.compile(VARIANT_ID_PATTERN)
_MONITOR = re.compile(MONITOR_ID_PATTERN)
# A configured destination's name, or the deprecated per-monitor webhook's (notification.webhook).
DESTINATION_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_DESTINATION = re.compile(DESTINATION_PATTERN)
RUN_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"  # printable ASCII, as the gateway accepts run ids
_RUN_ID = re.compile(RUN_ID_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps far outside what any stored row can hold are typos, not queries.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class Query:
    """The request's query parameters, checked against the names a route accepts."""

    def __init__(self, request: web.Request, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        self._values: dict[str, str] = {}
        for name in request.query:
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise bad_parameter(name, f"unknown parameter (this route takes: {known})")
            values = request.query.getall(name)
            if len(values) > 1:
                raise bad_parameter(name, "given more than once")
            self._values[name] = values[0]

    def text(self, name: str) -> str | None:
        return self._values.get(name)

    def required(self, name: str) -> str:
        value = self._values.get(name)
        if value is None or value == "":
            raise bad_parameter(name, "is required")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        text = self._values.get(name)
        if text is None:
            return default
        if not re.fullmatch(r"-?\d{1,12}", text):
            raise bad_parameter(name, f"must be a whole number, got {text[:40]!r}")
        value = int(text)
        if not low <= value <= high:
            raise bad_parameter(name, f"must be between {low} and {high}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        text = self._values.get(name)
        if text is None:
            return default
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise bad_parameter(name, f"must be true or false, got {text[:40]!r}")

    def time(self, name: str, default: datetime) -> datetime:
        text = self._values.get(name)
        return default if text is None else parse_time(name, text)

    def optional_time(self, name: str) -> datetime | None:
        text = self._values.get(name)
        return None if text is None else parse_time(name, text)

    @overload
    def duration(self, name: str, default: int) -> int: ...
    @overload
    def duration(self, name: str, default: None) -> int | None: ...

    def duration(self, name: str, default: int | None) -> int | None:
        text = self._values.get(name)
        if text is None:
            return default
        try:
            seconds = parse_duration(int(text) if text.isdigit() else text)
        except ValueError:
            raise bad_parameter(name, f"must be a duration like 1m, 5m, 1h or 1d, got {text[:40]!r}") from None
        if seconds < 60 or seconds % 60:
            raise bad_parameter(name, f"must be a whole number of minutes (at least 1m), got {seconds}s")
        return seconds

    def choice(self, name: str, choices: Iterable[str], default: str | None) -> str | None:
        text = self._values.get(name)
        if text is None:
            return default
        options = list(choices)
        if text not in options:
            raise bad_parameter(name, f"must be one of {', '.join(options)}, got {text[:40]!r}")
        return text

    def pattern(self, name: str, kind: str) -> str | None:
        text = self._values.get(name)
        return None if text is None else checked(name, text, kind)


def parse_time(name: str, text: str) -> datetime:
    """RFC 3339 / ISO 8601 with a zone (``2030-01-01T12:00:00Z``) or Unix seconds."""
    try:
        if re.fullmatch(r"\d{1,12}(\.\d{1,9})?", text):
            moment = _EPOCH + timedelta(seconds=float(text))
        else:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
    except (ValueError, OverflowError):
        raise bad_parameter(name, f"must be an RFC 3339 time or Unix seconds, got {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise bad_parameter(name, "needs a time zone (e.g. 2030-01-01T12:00:00Z)")
    utc = _storable(moment)
    if utc is None:
        raise bad_parameter(name, f"must be between {_EARLIEST.year} and {_LATEST.year}")
    return utc


def _storable(moment: datetime) -> datetime | None:
    """``moment`` (zoned) in UTC if it lies in the years any stored row can hold, else None."""
    try:
        # 9999-12-31T23:59:59-23:59 is valid text, but no datetime holds its UTC time.
        utc = moment.astimezone(UTC)
    except OverflowError:
        return None
    return utc if _EARLIEST <= utc < _LATEST else None


def cursor_time(name: str, text: str) -> datetime:
    """The time in a page cursor: zoned ISO 8601 in the years rows can hold, as this API writes
    it. Anything else is a 400 here, where Postgres would refuse it as out of range (a 500)."""
    try:
        moment: datetime | None = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    utc = _storable(moment) if moment is not None and moment.tzinfo is not None else None
    if utc is None:
        raise bad_parameter(name, "is not a cursor this API returned")
    return utc


_PATTERNS = {"deployment": _NAME, "variant": _VARIANT, "monitor": _MONITOR, "run_id": _RUN_ID,
             "destination": _DESTINATION}


def checked(name: str, text: str, kind: str) -> str:
    if not _PATTERNS[kind].fullmatch(text):
        raise bad_parameter(name, f"{text[:80]!r} is not a valid {kind.replace('_', ' ')}")
    return text


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(name: str, text: str | None, shape: tuple[type, ...]) -> list[Any] | None:
    """The values a cursor was made from, checked against their expected types."""
    if text is None:
        return None
    try:
        if len(text) > 1000:
            raise ValueError
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8"))
        if not isinstance(values, list) or len(values) != len(shape) or has_lone_surrogate(values):
            raise ValueError
        if not all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(values, shape, strict=True)):
            raise ValueError
        # What Postgres cannot hold (a NUL in text, an integer beyond bigint) would be a 500 there.
        if any(isinstance(v, str) and "\x00" in v or isinstance(v, int) and not -2**63 <= v < 2**63 for v in values):
            raise ValueError
    except (ValueError, binascii.Error, RecursionError):  # UnicodeDecodeError is a ValueError
        raise bad_parameter(name, "is not a cursor this API returned") from None
    return values


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def ceil_minute(moment: datetime) -> datetime:
    floored = floor_minute(moment)
    return floored if floored == moment else floored + timedelta(minutes=1)
