"""Structured log lines: fields, trace ids, and secrets masked wherever they hide."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from shared.logs import MASK, MalformedRequestFilter, redact, setup_logging
from shared.settings import TelemetrySettings


@pytest.fixture(autouse=True)
def _restore_logging():
    """setup_logging changes process-wide levels; put them back for the tests that follow."""
    root, kafka = logging.getLogger(), logging.getLogger("aiokafka")
    levels = root.level, kafka.level
    yield
    root.setLevel(levels[0])
    kafka.setLevel(levels[1])


@pytest.fixture
def stream():
    out = io.StringIO()
    handler = setup_logging("gateway", TelemetrySettings(log_format="json", log_level="DEBUG"), stream=out)
    yield out
    logging.getLogger().removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_the_fields_and_extras(stream) -> None:
    logging.getLogger("gateway.score").info("scored %s", "req-1", extra={"deployment": "support", "latency_ms": 12})
    (line,) = _lines(stream)
    assert line["level"] == "INFO" and line["service"] == "gateway"
    assert line["logger"] == "gateway.score" and line["message"] == "scored req-1"
    assert line["deployment"] == "support" and line["latency_ms"] == 12
    assert line["time"].endswith("+00:00")
    assert "trace_id" not in line  # no span active: no ids


def test_json_line_carries_the_current_trace_and_span_ids(stream) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("score") as span:
        logging.getLogger("gateway").warning("slow judge")
    (line,) = _lines(stream)
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key pp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_ab used", f"key {MASK} used"),
        ("OPENAI key sk-proj-abcdefghijklmnopqrstuv!", f"OPENAI key {MASK}!"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", f"Authorization: Bearer {MASK}"),
        ("postgresql://promptpulse:s3cret@127.0.0.1/db", f"postgresql://promptpulse:{MASK}@127.0.0.1/db"),
        ('{"api_key": "abc123def"}', f'{{"api_key": "{MASK}"}}'),
        ("password=hunter2 user=bob", f"password={MASK} user=bob"),
    ],
)
def test_redact_masks_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "prompt_tokens=12 completion_tokens=30 total_tokens=42",
        "deployment pp-event-type inference.request",
        "task-sk-1 finished; sk-short",
        "see https://example.invalid/v1/deployments/support/score",
        "Bearer",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_secrets_are_masked_in_message_args_extras_and_exceptions(stream) -> None:
    key = "pp_" + "k" * 43
    log = logging.getLogger("gateway.auth")
    log.info("rejected %s", key, extra={"header": f"Bearer {key}", "nested": {"dsn": "redis://u:pw@h/0"}})
    try:
        raise PermissionError(f"bad key {key}")
    except PermissionError:
        log.exception("auth failed")
    text = stream.getvalue()
    assert key not in text and "pw@" not in text
    first, second = _lines(stream)
    assert first["message"] == f"rejected {MASK}"
    assert first["header"] == f"Bearer {MASK}"
    assert first["nested"] == {"dsn": f"redis://u:{MASK}@h/0"}
    assert f"PermissionError: bad key {MASK}" in second["exception"]


def test_text_format_and_setup_is_idempotent() -> None:
    out = io.StringIO()
    settings = TelemetrySettings(log_format="text", log_level="INFO")
    setup_logging("processor", settings, stream=io.StringIO())
    handler = setup_logging("processor", settings, stream=out)
    root = logging.getLogger()
    try:
        assert sum(getattr(h, "_promptpulse", False) for h in root.handlers) == 1
        logging.getLogger("processor.judge").info("judged %d", 3, extra={"metric": "relevance"})
        logging.getLogger("processor.judge").debug("below the level")
        line = out.getvalue().strip()
        assert "\n" not in line
        assert " INFO processor processor.judge judged 3 metric=relevance" in line
    finally:
        root.removeHandler(handler)


def test_a_bad_format_string_still_logs_a_line(stream) -> None:
    logging.getLogger("gateway").info("%d requests", "not-a-number")
    (line,) = _lines(stream)
    assert "requests" in line["message"]


def _server_record(exc: BaseException, level: int = logging.ERROR) -> logging.LogRecord:
    # As aiohttp's RequestHandler.handle_error logs a request it cannot parse.
    return logging.LogRecord("aiohttp.server", level, "web_protocol.py", 548, "Error handling request from %s",
                             ("203.0.113.9",), (type(exc), exc, None))


def test_a_parser_error_is_one_warning_line_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, BadStatusLine

    clock = [1000.0]
    monkeypatch.setattr("shared.logs.time.monotonic", lambda: clock[0])
    quiet = MalformedRequestFilter(interval=60)
    first = _server_record(BadStatusLine(b"GET / HTTP/9.9\r\nsecond line"))
    assert quiet.filter(first)
    assert (first.levelno, first.exc_info) == (logging.WARNING, None)
    message = first.getMessage()
    assert message.startswith("malformed HTTP request from 203.0.113.9 refused (400): Bad status line") \
        and "\n" not in message
    for _ in range(5):
        assert not quiet.filter(_server_record(BadHttpMessage("Invalid header")))
    clock[0] += 61
    later = _server_record(BadHttpMessage("Invalid header"))
    assert quiet.filter(later) and later.getMessage().endswith("(5 more since the last such line)")
    # A handler's own failure keeps its ERROR and traceback; aiohttp's DEBUG lines are left as they are.
    crash = _server_record(RuntimeError("bug"))
    assert quiet.filter(crash) and crash.levelno == logging.ERROR and crash.exc_info is not None
    probe = _server_record(BadHttpMethod("\x16\x03"), level=logging.DEBUG)
    assert quiet.filter(probe) and probe.levelno == logging.DEBUG


def test_setting_up_logging_quiets_every_aiohttp_server_of_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    server = logging.getLogger("aiohttp.server")
    monkeypatch.setattr(server, "filters", [])
    setup_logging("aggregator", TelemetrySettings(log_format="text"), stream=io.StringIO())
    setup_logging("aggregator", TelemetrySettings(log_format="text"), stream=io.StringIO())
    assert [type(f) for f in server.filters] == [MalformedRequestFilter]
