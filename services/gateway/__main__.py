"""``python -m services.gateway`` (and ``promptpulse gateway``): serve the deployments.

:func:`keys` is ``promptpulse keys``: the CLI reaches the gateway through this entry point only.
"""

from __future__ import annotations

import logging
import sys

from services.gateway.events import SpoolError
from services.gateway.settings import GatewaySettings
from shared.deployments import ConnectionKeyMissingError, DeploymentConfigError
from shared.flow import FlowError
from shared.logs import setup_logging
from shared.settings import SettingsError, load_settings
from shared.topics import TopicError


def main() -> int:
    try:
        settings = load_settings(GatewaySettings)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging("gateway", settings.telemetry)
    # The openai client's transport logs every LLM call at INFO: a line per request is noise
    # (and CPU) at gateway volumes; the spans and /metrics carry the same facts.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    from services.gateway.app import run_gateway

    try:
        run_gateway(settings)
    except (DeploymentConfigError, FlowError, ConnectionKeyMissingError, TopicError, SettingsError,
            SpoolError) as exc:
        # Start-up refused: a bad deployment, flow, connection key, topic prefix, Kafka setting,
        # or a spool folder another gateway holds.
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def keys(argv: list[str]) -> int:
    """``promptpulse keys create|list|revoke DEPLOYMENT`` (services/gateway/keys_cli.py)."""
    from services.gateway.keys_cli import main as keys_main

    return keys_main(argv)


if __name__ == "__main__":
    sys.exit(main())
