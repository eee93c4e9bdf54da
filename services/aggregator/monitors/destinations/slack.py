"""A Slack incoming-webhook message in Block Kit (https://api.slack.com/block-kit): a header,
the one-line summary, the facts as fields, links to the dashboard and the runbook. ``text`` is
the fallback Slack shows in notifications and to clients without blocks."""

from __future__ import annotations

from typing import Any

from services.aggregator.monitors.destinations.notice import Notice

# Slack's limits: header text 150 characters, section text 3000, ten fields per section.
_HEADER_MAX = 150
_TEXT_MAX = 3000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(notice: Notice) -> dict[str, Any]:
    mark = "🔴" if notice.firing else "✅"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"{mark} {notice.title}", _HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(notice.message, _TEXT_MAX)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{label}*\n{_cut(value, 1900)}"}
                                       for label, value in notice.facts()[:10]]},
    ]
    buttons = []
    if notice.dashboard_url:
        buttons.append({"type": "button", "text": {"type": "plain_text", "text": "Dashboard"},
                        "url": notice.dashboard_url})
    if notice.runbook_url:
        buttons.append({"type": "button", "text": {"type": "plain_text", "text": "Runbook"},
                        "url": notice.runbook_url})
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"PromptPulse alert `{notice.event_id}`"}]})
    return {"text": _cut(notice.message, _TEXT_MAX), "blocks": blocks}
