"""What a Python node prints (``print``, ``sys.stdout``/``sys.stderr``) and logs (``logging``)
while it runs, captured into that node's ``execute_tool`` span.

Capture follows the node's context, not the process: ``sys.stdout``/``sys.stderr`` are replaced
by writers that send text to the capture of the node whose context is running (a ContextVar;
worker threads of sync tools get a copy of it), and write through to the real stream otherwise.
So two requests' nodes printing at the same time never mix, and nothing outside a node changes.
A log record is captured by a root-logger handler the same way, and still reaches the service's
own log handlers as before; only records the logging configuration lets through are seen.

Each captured line becomes one span event ``promptpulse.node.output`` with its stream
(``stdout``, ``stderr`` or ``log``), the log level for records, the text with credentials
redacted (the logs' patterns, shared/logs.py, then telemetry.redact's key-like tokens), and the
request id. Bounded per node run: at most
:data:`MAX_LINES` events and :data:`MAX_CHARS` characters of text (a line is cut at
:data:`MAX_LINE_CHARS`); what is left out is counted in the span's
``promptpulse.node.output.dropped_lines``. Threads a node starts itself do not inherit the
context: their output goes to the process's streams, as before.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from opentelemetry import trace

from shared.flow import telemetry
from shared.logs import redact as redact_secrets

EVENT = "promptpulse.node.output"
STREAM = "promptpulse.output.stream"
TEXT = "promptpulse.output.text"
LEVEL = "log.level"
REQUEST_ID = "promptpulse.request_id"
DROPPED = "promptpulse.node.output.dropped_lines"
MAX_LINES = 100
MAX_CHARS = 16_000
MAX_LINE_CHARS = 2_000


class CapturedOutput:
    """The output lines of one node run (thread-safe: a sync tool writes from its worker thread)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str | None]] = []  # (stream, text, log level)
        self.dropped = 0
        self._chars = 0
        self._partial: dict[str, str] = {}
        self._lock = threading.Lock()

    def write(self, stream: str, text: str) -> None:
        with self._lock:
            pending = self._partial.get(stream, "") + text
            *complete, rest = pending.split("\n")
            self._partial[stream] = rest[: MAX_LINE_CHARS + 1]  # a never-ending line stays bounded
            for line in complete:
                self._add(stream, line, None)

    def log(self, text: str, level: str) -> None:
        with self._lock:
            self._add("log", text, level)

    def _add(self, stream: str, text: str, level: str | None) -> None:
        if len(self.lines) >= MAX_LINES or self._chars >= MAX_CHARS:
            self.dropped += 1
            return
        text = text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"
        text = text[: MAX_CHARS - self._chars]
        self._chars += len(text)
        self.lines.append((stream, text, level))

    def finish(self) -> None:
        with self._lock:
            for stream, rest in self._partial.items():
                if rest:
                    self._add(stream, rest, None)
            self._partial.clear()

    def record(self, span: trace.Span, request_id: str | None) -> None:
        self.finish()
        for stream, text, level in self.lines:
            # The logs' credential patterns (api_key=..., Bearer ..., user:password@), then the
            # runtime's own (key-like tokens), as error messages get.
            attributes: dict[str, Any] = {STREAM: stream, TEXT: telemetry.redact(redact_secrets(text), MAX_LINE_CHARS)}
            if level is not None:
                attributes[LEVEL] = level
            if request_id:
                attributes[REQUEST_ID] = request_id
            span.add_event(EVENT, attributes)
        if self.dropped:
            span.set_attribute(DROPPED, self.dropped)


_current: ContextVar[CapturedOutput | None] = ContextVar("promptpulse_node_output", default=None)


class _RoutingStream(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr: a node's text to its capture, the rest through."""

    def __init__(self, name: str, original: TextIO) -> None:
        self.name_ = name
        self.original = original

    def write(self, text: str) -> int:
        captured = _current.get()
        if captured is None:
            return self.original.write(text)
        captured.write(self.name_, text)
        return len(text)

    def flush(self) -> None:
        if _current.get() is None:
            self.original.flush()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer...
        return getattr(self.original, name)


class _RoutingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        captured = _current.get()
        if captured is not None:
            try:
                captured.log(record.getMessage(), record.levelname)
            except Exception:  # a record whose message cannot be formatted: as logging does, go on
                self.handleError(record)


_install_lock = threading.Lock()
_handler = _RoutingHandler()


def _install() -> None:
    # Checked at every node run, not once: something else (a test runner's capture) may have
    # replaced the streams since; wrapping whatever is current keeps its behaviour for the rest.
    with _install_lock:
        if not isinstance(sys.stdout, _RoutingStream):
            sys.stdout = _RoutingStream("stdout", sys.stdout)
        if not isinstance(sys.stderr, _RoutingStream):
            sys.stderr = _RoutingStream("stderr", sys.stderr)
        root = logging.getLogger()
        if _handler not in root.handlers:
            root.addHandler(_handler)


@contextmanager
def capture_node_output(span: trace.Span, request_id: str | None) -> Iterator[CapturedOutput]:
    """While the block runs, this context's prints and log records are the node's; on exit they
    are recorded on ``span``."""
    _install()
    captured = CapturedOutput()
    token = _current.set(captured)
    try:
        yield captured
    finally:
        _current.reset(token)
        captured.record(span, request_id)
