"""From an outbox target (a destination as configured: environment variable NAMES only) and a
notice to the HTTP request to send, the credentials read from the environment at that moment."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.aggregator.monitors.alerts import slack_body
from services.aggregator.monitors.destinations.notice import Notice
from services.aggregator.monitors.destinations.pagerduty import pagerduty_event
from services.aggregator.monitors.destinations.slack import slack_message
from services.aggregator.monitors.destinations.teams import teams_message
from services.aggregator.monitors.destinations.webhook import signed_headers
from shared.deployments import (
    Destination,
    Monitor,
    Notification,
    PagerDutyDestination,
    SlackDestination,
    TeamsDestination,
    WebhookDestination,
)

log = logging.getLogger(__name__)

# The deprecated notification.webhook_url / webhook_url_env of a monitor, as a destination.
# Its name has a dot, which a configured destination's name cannot: the two never clash.
LEGACY_KIND = "legacy_webhook"
LEGACY_NAME = "notification.webhook"

_DESTINATION: TypeAdapter[Any] = TypeAdapter(Destination)


class NotReady(ValueError):
    """The destination cannot be sent to as configured (a variable unset, a bad stored target):
    final, retrying would not help. The message names variables, never their values."""


@dataclass(frozen=True)
class Outgoing:
    url: str
    body: bytes
    headers: dict[str, str]


def target_of(destination: Any) -> dict[str, Any]:
    """What the outbox stores for a configured destination: its fields, which name variables."""
    return destination.model_dump(mode="json")


def legacy_target(notification: Notification) -> dict[str, Any] | None:
    if notification.webhook_url is not None:
        # Deprecated: the URL is in the file and the monitors table already; it goes on being
        # stored here until the inline form is removed. webhook_url_env stores only the name.
        return {"kind": LEGACY_KIND, "name": LEGACY_NAME, "webhook_url": notification.webhook_url.get_secret_value()}
    if notification.webhook_url_env:
        return {"kind": LEGACY_KIND, "name": LEGACY_NAME, "webhook_url_env": notification.webhook_url_env}
    return None


def warn_inline_webhooks(deployment: str, monitors: Iterable[Monitor]) -> None:
    """One warning per monitor still using an inline ``notification.webhook_url`` (a credential
    in the file), naming the deployment and monitor, never the URL."""
    for monitor in monitors:
        if monitor.notification.webhook_url is not None:
            log.warning("deployment %s, monitor %s: notification.webhook_url is deprecated and will be removed "
                        "in the next release; name an environment variable instead (a destination's url_env, "
                        "or notification.webhook_url_env)", deployment, monitor.id)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _value(environ: Mapping[str, str], name: str, what: str) -> str:
    value = environ.get(name)
    if not value:
        raise NotReady(f"environment variable {name} ({what}) is not set in the aggregator")
    return value


def outgoing(target: Mapping[str, Any], notice: Notice, environ: Mapping[str, str], now: int) -> Outgoing:
    """The request for ``target``; ``now`` (Unix seconds) signs the generic webhook."""
    if target.get("kind") == LEGACY_KIND:
        fields = {k: v for k, v in target.items() if k in ("webhook_url", "webhook_url_env")}
        try:
            legacy_url = Notification.model_validate(fields).resolve_webhook_url(environ)
        except ValidationError as exc:
            raise NotReady(f"invalid webhook setting ({exc.error_count()} problems)") from None
        if legacy_url is None:
            raise NotReady(f"environment variable {fields.get('webhook_url_env')} (webhook URL) is not set "
                           "in the aggregator")
        headers = {"Content-Type": "application/json", "X-PromptPulse-Alert-Id": notice.event_id}
        return Outgoing(legacy_url.get_secret_value(), slack_body(asdict(notice)), headers)
    try:
        destination = _DESTINATION.validate_python(dict(target))
    except ValidationError as exc:
        raise NotReady(f"stored destination is not one this aggregator reads ({exc.error_count()} problems)") from None
    json_type = {"Content-Type": "application/json"}
    if isinstance(destination, SlackDestination):
        return Outgoing(_value(environ, destination.url_env, "Slack webhook URL"), _json(slack_message(notice)),
                        json_type)
    if isinstance(destination, TeamsDestination):
        return Outgoing(_value(environ, destination.url_env, "Teams workflow URL"), _json(teams_message(notice)),
                        json_type)
    if isinstance(destination, PagerDutyDestination):
        key = _value(environ, destination.routing_key_env, "PagerDuty routing key")
        return Outgoing(destination.events_url, _json(pagerduty_event(notice, key)), json_type)
    assert isinstance(destination, WebhookDestination)
    url = _value(environ, destination.url_env, "webhook URL")
    secret = _value(environ, destination.secret_env, "signing secret")
    body = notice.payload.encode()
    return Outgoing(url, body, json_type | signed_headers(secret, now, body, notice.event_id))
