"""Direct alert destinations of a deployment: Slack, Microsoft Teams, PagerDuty, a signed webhook.

For setups without Alertmanager (docs/alerting.md). A deployment names its destinations once
(``destinations:``); each monitor's alerts go to all of them, or to the ones its
``notification.destinations`` lists. Webhook URLs, routing keys and signing secrets are
credentials, so the file holds only the NAMES of the environment variables that carry them:
the aggregator reads the values when it sends, and stores and shows only the names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field

from shared.deployments.base import ENV_NAME_PATTERN, ConfigModel

DESTINATION_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
_HTTP_URL = r"^https?://[^\s/]+\S*$"


class _Destination(ConfigModel):
    name: str = Field(pattern=DESTINATION_NAME_PATTERN)

    def secret_names(self) -> dict[str, str]:
        """Field -> the environment variable holding that credential."""
        raise NotImplementedError

    def missing(self, environ: Mapping[str, str]) -> list[str]:
        """The environment variables this destination needs that are unset or empty."""
        return [env for env in self.secret_names().values() if not environ.get(env)]


class SlackDestination(_Destination):
    """A Slack incoming webhook; the message is Block Kit."""

    kind: Literal["slack"]
    url_env: EnvName

    def secret_names(self) -> dict[str, str]:
        return {"url": self.url_env}


class TeamsDestination(_Destination):
    """A Microsoft Teams workflow ("When a Teams webhook request is received"); an Adaptive Card."""

    kind: Literal["teams"]
    url_env: EnvName

    def secret_names(self) -> dict[str, str]:
        return {"url": self.url_env}


class PagerDutyDestination(_Destination):
    """PagerDuty Events API v2: trigger on firing, resolve on resolved, one incident per monitor."""

    kind: Literal["pagerduty"]
    routing_key_env: EnvName
    # Not a secret (the routing key is): PagerDuty's EU service, or a proxy, may differ.
    events_url: str = Field(PAGERDUTY_EVENTS_URL, pattern=_HTTP_URL, max_length=2048)

    def secret_names(self) -> dict[str, str]:
        return {"routing_key": self.routing_key_env}


class WebhookDestination(_Destination):
    """Any HTTP receiver: the alert's JSON, signed with HMAC-SHA256 over a timestamp and the body."""

    kind: Literal["webhook"]
    url_env: EnvName
    secret_env: EnvName

    def secret_names(self) -> dict[str, str]:
        return {"url": self.url_env, "secret": self.secret_env}


Destination = Annotated[
    SlackDestination | TeamsDestination | PagerDutyDestination | WebhookDestination,
    Field(discriminator="kind"),
]
DESTINATION_KINDS = ("slack", "teams", "pagerduty", "webhook")
