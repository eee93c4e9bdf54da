"""Structured logs: one JSON object a line (or plain text), with the current trace and span ids.

Every line carries ``service``, and ``trace_id``/``span_id`` when a span is active, so a log
line leads to its trace in the aggregator. Secrets never reach a log line: a filter on the
handler masks anything that looks like an API key, a bearer token or a password in a URL,
wherever it appears (message, arguments, extra fields, exception text). It guards against the
mistake, it is not a licence to log secrets: code still must not log them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from shared.settings import TelemetrySettings

MASK = "[REDACTED]"

# Each pattern keeps group 1 (the harmless lead-in) and masks the rest.
_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Our deployment keys (shared.apikeys: pp_ + 43 url-safe chars) and OpenAI-style keys.
    re.compile(r"()\bpp_[A-Za-z0-9_-]{16,}"),
    re.compile(r"()\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(\bbasic\s+)[A-Za-z0-9+/=]{8,}"),
    # user:password@ in a DSN or URL.
    re.compile(r"(://[^:/@\s]+:)[^@/\s]+(?=@)"),
    # api_key=..., "password": "...", secret: ...
    re.compile(
        r"(?i)(\b(?:api[_-]?key|apikey|password|passwd|secret|client[_-]?secret)"
        r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
    ),
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[REDACTED]``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "trace_id", "span_id", "taskName"}
)


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


class RedactingFilter(logging.Filter):
    """Masks credentials in the record itself, so every formatter and handler sees it masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extra_fields(record).items():
            setattr(record, key, _redact_value(value))
        return True


class TraceContextFilter(logging.Filter):
    """Stamps the active span's ids on the record in the logging thread, where they are current."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", None)
        for key, value in _extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, self.service, record.name]
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            parts.append(f"trace={trace_id} span={getattr(record, 'span_id', None)}")
        parts.append(record.getMessage())
        parts.extend(f"{k}={v}" for k, v in _extra_fields(record).items())
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class MalformedRequestFilter(logging.Filter):
    """aiohttp's server logs every request it cannot parse (a garbled request line, a bad header)
    at ERROR with a full traceback: anyone who can reach the port could fill the logs at no
    cost. This turns such a record into one WARNING line without the traceback, at most once per
    ``interval`` seconds, the next line saying how many were not logged in between."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._next = 0.0
        self._unlogged = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.ERROR or not isinstance(exc, HttpProcessingError):
            return True  # a handler's own failure keeps its traceback; DEBUG lines are opt-in
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._unlogged += 1
                return False
            unlogged, self._unlogged, self._next = self._unlogged, 0, now + self.interval
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        reason = " ".join(str(exc.message or type(exc).__name__).split())[:200]
        more = f" ({unlogged} more since the last such line)" if unlogged else ""
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "malformed HTTP request from %s refused (%s): %s%s"
        record.args = (peer, exc.code, reason, more)
        record.exc_info = record.exc_text = None
        return True


def quiet_malformed_requests(interval: float = 60.0) -> None:
    """Install :class:`MalformedRequestFilter` on aiohttp's server logger (once per process):
    every aiohttp server of the process is covered."""
    server_logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_logger.filters):
        server_logger.addFilter(MalformedRequestFilter(interval))


def make_handler(service: str, settings: TelemetrySettings, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter = JsonFormatter(service) if settings.log_format == "json" else TextFormatter(service)
    handler.setFormatter(formatter)
    handler.addFilter(TraceContextFilter())
    handler.addFilter(RedactingFilter())
    handler._promptpulse = True  # type: ignore[attr-defined]  # found again by setup_logging
    return handler


def setup_logging(
    service: str, settings: TelemetrySettings, *, stream: TextIO | None = None
) -> logging.Handler:
    """Send the root logger to stderr (or ``stream``) in the configured format and level.

    Idempotent: a handler installed by an earlier call is replaced, not duplicated, and
    handlers installed by others (pytest's capture, for one) are left alone.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_promptpulse", False)]:
        root.removeHandler(old)
        old.close()
    handler = make_handler(service, settings, stream)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # aiokafka logs every connection retry at INFO/ERROR; while the broker is away that
    # would drown the service's own lines.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    quiet_malformed_requests()
    return handler
