"""Silences of direct destinations, the pure parts: what a silence request may say, how a
stored silence reads back, and what the CLI makes of its arguments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.aggregator.monitors.silences import (
    SilenceInputError,
    parse_silence,
    parse_silence_duration,
    public_silence,
    silence_state,
)
from services.cli import build_parser, formatting, monitors

pytestmark = pytest.mark.timeout(30)

GOOD = {"duration": "2h", "reason": "deploy in progress", "created_by": "alice"}


@pytest.mark.parametrize(("text", "seconds"), [("1m", 60), ("90m", 5400), ("2h", 7200), (" 30d ", 30 * 86400)])
def test_durations_from_a_minute_to_thirty_days(text: str, seconds: int) -> None:
    assert parse_silence_duration(text) == seconds


@pytest.mark.parametrize(("value", "says"), [
    ("0m", "at least 1m"), ("0", "not a duration"), ("59s", "at least 1m"), ("-1h", "not a duration"),
    ("31d", "at most 30d"), ("721h", "at most 30d"), ("1h30m", "not a duration"), ("soon", "not a duration"),
    ("", "not a duration"), (7200, "duration string"), (None, "duration string"), (True, "duration string"),
])
def test_nonsense_durations_are_refused_naming_the_field(value: object, says: str) -> None:
    with pytest.raises(SilenceInputError) as error:
        parse_silence_duration(value)
    assert error.value.field == "duration" and says in str(error.value)


def test_a_request_is_checked_field_by_field() -> None:
    wanted = parse_silence({**GOOD, "reason": "  on it  "})
    assert (wanted.seconds, wanted.reason, wanted.created_by) == (7200, "on it", "alice")
    for body, field in [({**GOOD, "reason": ""}, "reason"), ({**GOOD, "reason": "a\nb"}, "reason"),
                        ({**GOOD, "reason": "x" * 1001}, "reason"), ({**GOOD, "created_by": None}, "created_by"),
                        ({**GOOD, "created_by": "\x1b[31mroot"}, "created_by"), ({**GOOD, "ends_at": 1}, "ends_at"),
                        ({"reason": "r", "created_by": "a"}, "duration"), (["2h"], "body")]:
        with pytest.raises(SilenceInputError) as error:
            parse_silence(body)
        assert error.value.field == field, body


def test_a_stored_silence_reads_back_active_expired_or_ended() -> None:
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    row = {"id": 1, "deployment": "demo", "monitor_id": "rel", "created_by": "alice", "reason": "r",
           "created_at": now - timedelta(hours=1), "ends_at": now + timedelta(hours=1), "ended_at": None,
           "ended_by": None, "now": now}
    assert silence_state(row) == "active"
    assert silence_state({**row, "ends_at": now}) == "expired"
    assert silence_state({**row, "ended_at": now, "ended_by": "bob"}) == "ended"
    assert public_silence(row)["state"] == "active" and "now" not in public_silence(row)


def test_the_cli_parses_silence_silences_and_unsilence() -> None:
    parser = build_parser()
    args = parser.parse_args(["monitors", "demo", "silence", "rel", "--for", "2h", "--reason", "why"])
    assert (args.action, args.monitor_id, args.duration, args.reason, args.by) == ("silence", "rel", "2h", "why", None)
    assert parser.parse_args(["monitors", "demo", "silences", "--state", "expired"]).state == "expired"
    assert parser.parse_args(["monitors", "demo", "unsilence", "rel", "--by", "bob"]).by == "bob"
    with pytest.raises(SystemExit):  # --reason is required: a silence says why
        parser.parse_args(["monitors", "demo", "silence", "rel", "--for", "2h"])


def test_set_takes_severity_and_runbook_url_and_an_empty_one_removes_it() -> None:
    parser = build_parser()
    args = parser.parse_args(["monitors", "demo", "set", "rel", "--severity", "critical",
                              "--runbook-url", "https://runbooks.example/rel"])
    changes = monitors.changes_from(args)
    assert changes == {"severity": "critical", "runbook_url": "https://runbooks.example/rel"}
    stored = [{"id": "rel", "statistic": "average", "metric": "relevance", "threshold": 3.5, "window": "5m",
               "severity": "warning", "runbook_url": "https://old.example"}]
    [changed] = monitors.apply_change(stored, "rel", changes)
    assert changed["severity"] == "critical" and changed["runbook_url"] == "https://runbooks.example/rel"
    [cleared] = monitors.apply_change(stored, "rel", {"runbook_url": ""})
    assert "runbook_url" not in cleared and cleared["severity"] == "warning"


def test_listings_mark_silenced_monitors_and_alerts() -> None:
    monitor = {"id": "rel", "statistic": "average", "metric": "relevance", "threshold": 3.5, "window": "5m",
               "state": "firing", "source": "api", "silenced_until": "2030-01-01T12:00:00+00:00"}
    [row] = monitors.rows({"monitors": [monitor]})
    assert row[6].startswith("FIRING (silenced until ")
    [row] = monitors.rows({"monitors": [{**monitor, "silenced_until": None}]})
    assert row[6] == "FIRING"
    assert "silenced_until" not in monitors.definition(monitor)  # never sent back in a PUT
    alert = {"created_at": "2030-01-01T12:00:00+00:00", "monitor_id": "rel", "deployment": "demo",
             "statistic": "average", "metric": "relevance", "state": "firing", "value": 2.0, "threshold": 3.5,
             "sample_count": 9, "silenced": True}
    assert formatting.alert_line(formatting.api_alert_as_event(alert)).endswith("  [silenced]")
    assert "silenced" not in formatting.alert_line(formatting.api_alert_as_event({**alert, "silenced": False}))
