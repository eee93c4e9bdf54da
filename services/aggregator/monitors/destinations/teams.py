"""A Microsoft Teams workflow webhook message: one Adaptive Card (schema 1.4, what Teams renders)
in ``attachments``, as the "When a Teams webhook request is received" trigger expects."""

from __future__ import annotations

from typing import Any

from services.aggregator.monitors.destinations.notice import Notice

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


def teams_message(notice: Notice) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {"type": "TextBlock", "text": notice.title, "weight": "Bolder", "size": "Medium", "wrap": True,
             "color": "Attention" if notice.firing else "Good"},
            {"type": "TextBlock", "text": notice.message, "wrap": True},
            {"type": "FactSet", "facts": [{"title": label, "value": value} for label, value in notice.facts()]},
        ],
    }
    actions = []
    if notice.dashboard_url:
        actions.append({"type": "Action.OpenUrl", "title": "Dashboard", "url": notice.dashboard_url})
    if notice.runbook_url:
        actions.append({"type": "Action.OpenUrl", "title": "Runbook", "url": notice.runbook_url})
    if actions:
        card["actions"] = actions
    return {"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}]}
