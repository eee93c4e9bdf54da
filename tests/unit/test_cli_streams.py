"""The CLI's stream handling and error messages: HTTP refusals explained, alert repeats
dropped, token chunks assembled into blocks (server-sent events are split by shared/sse.py,
tested in test_sse.py). Pure units (no server, no broker)."""

from __future__ import annotations

import json

import pytest

from services.cli import config
from services.cli.alerts import MalformedAlert, Repeats, parse_alert
from services.cli.client import Service, error_text
from services.cli.tail import IDLE_SECONDS, SETTLE_SECONDS, Tail, block_text

pytestmark = pytest.mark.timeout(30)

def _service() -> Service:
    return Service("query API", "http://127.0.0.1:8081", {}, config.api_key_hint(False), "PROMPTPULSE_API_READ_KEY",
                   forbidden_hint="use the admin key")


def test_a_401_says_which_key_to_set_without_the_key() -> None:
    error = _service().fail(401, '{"error": {"type": "unauthorized", "message": "missing or invalid key"}}')
    assert error.code == config.EXIT_USAGE and error.status == 401
    assert config.READ_KEY_ENV in str(error) and "http://127.0.0.1:8081" in str(error)


def test_refusals_map_to_exit_codes() -> None:
    service = _service()
    not_found = service.fail(404, '{"error": {"type": "not_found", "message": "no deployment named \'x\'"}}',
                             "no deployment 'x'")
    assert not_found.code == config.EXIT_NOT_FOUND and str(not_found).startswith("no deployment 'x'")
    assert service.fail(403, "{}").code == config.EXIT_USAGE
    assert "admin key" in str(service.fail(403, "{}"))
    bad = service.fail(400, '{"error": {"type": "invalid_parameter", "message": "step: too small"}}')
    assert bad.code == config.EXIT_USAGE and "step: too small" in str(bad)
    assert service.fail(503, "<html>busy</html>").code == config.EXIT_SERVICE_ERROR
    assert error_text("<html>\n busy </html>") == (None, "<html> busy </html>")


def test_unreachable_names_the_url_and_the_hint() -> None:
    error = _service().unreachable(ConnectionRefusedError(111, "Connection refused"))
    assert error.code == config.EXIT_UNREACHABLE
    assert "http://127.0.0.1:8081" in str(error) and "make up" in str(error)


ALERT = {"eventId": "e1", "eventTime": "2030-01-01T12:00:05Z", "monitorId": "m", "deployment": "demo",
         "state": "ALERT_STATE_FIRING", "value": 3.1}


def test_alert_records_and_repeats() -> None:
    assert parse_alert(json.dumps(ALERT).encode()) == ALERT
    for malformed, why in [(b"not json", "alert"), (b"[1]", "alert"), (None, "no value"),
                           (json.dumps({**ALERT, "value": "high"}).encode(), "value"),
                           (json.dumps({**ALERT, "deployment": 5}).encode(), "deployment"),
                           (json.dumps({k: v for k, v in ALERT.items() if k != "monitorId"}).encode(), "monitor_id")]:
        with pytest.raises(MalformedAlert, match=why):
            parse_alert(malformed)
    repeats = Repeats(size=2)
    assert [repeats.seen(i) for i in ("a", "b", "a", "c", "d", "a")] == [False, False, True, False, False, False]
    assert repeats.seen("") is False and repeats.seen(None) is False


def test_tail_assembles_a_block_per_request() -> None:
    tail = Tail("demo")
    tail.chunk("r1", "variant_0", 0, "Hello", 1, now=100.0)
    tail.chunk("r2", "variant_1", 0, "Other", 1, now=100.1)
    tail.chunk("r1", "variant_0", 1, " world", 1, now=100.2)
    tail.response("r1", {"status": "ok", "latency_ms": 250.0, "time_to_first_token_ms": 20.0}, now=100.3)
    assert tail.finished(100.3 + SETTLE_SECONDS / 2) == []  # a late chunk may still come
    tail.chunk("r1", "variant_0", 2, "!", 1, now=100.5)
    (done,) = tail.finished(100.5 + SETTLE_SECONDS)
    text = block_text(done)
    assert done.request_id == "r1" and "Hello world!" in text
    assert "demo/variant_0" in text and "ok · 3 tokens streamed · 250 ms · first token 20 ms" in text
    assert [s.request_id for s in tail.active()] == ["r2"]
    (stale,) = tail.finished(100.1 + IDLE_SECONDS)
    assert stale.request_id == "r2" and "no response seen" in block_text(stale)


def test_tail_response_before_chunks_gaps_and_redaction() -> None:
    tail = Tail("demo")
    tail.response("r1", {"status": "ok", "latency_ms": 5.0}, now=10.0)  # the other topic was faster
    tail.chunk("r1", "variant_0", 0, "", 4, now=10.1)  # redacted: counts, no text
    tail.chunk("r1", "variant_0", 2, "tail", 1, now=10.2)  # chunk 1 never came
    (done,) = tail.finished(10.2 + SETTLE_SECONDS)
    text = block_text(done)
    assert "[redacted: 4 tokens]" in text and "tail" in text and "1 gap(s)" in text
    assert tail.wants("demo") and not tail.wants("other")
    assert not Tail("demo", "variant_1").wants("demo", "variant_0")
