"""``python -m services.gateway`` (and ``promptpulse gateway``): serve the deployments.

:func:`keys` is ``promptpulse keys``: the CLI reaches the gateway through this entry point only.
"""

from __future__ import annotations

import sys

from services.gateway.events import SpoolError
from services.gateway.settings import GatewaySettings
from shared.deployments import ConnectionKeyMissingError, DeploymentConfigError
from shared.entrypoint import LLM_CLIENT_LOGGERS, run_service
from shared.flow import FlowError
from shared.topics import TopicError


def main() -> int:
    # Start-up refused: a missing deployments folder, a topic prefix, a Kafka setting, or a spool
    # folder another gateway holds. A deployment, flow or connection key that does not load costs
    # only its own deployment (registry_load.py); FlowError and ConnectionKeyMissingError stay listed
    # so that anything escaping that isolation is still a clear refusal, not a traceback.
    return run_service("gateway", GatewaySettings, serve, quiet_loggers=LLM_CLIENT_LOGGERS, refusals=(
        DeploymentConfigError, FlowError, ConnectionKeyMissingError, TopicError, SpoolError))


def serve(settings: GatewaySettings) -> int | None:
    section = settings.gateway
    if section.workers > 1 and section.worker_index is None:
        from services.gateway.workers import run_workers

        return run_workers(settings, section.workers)
    from services.gateway.app import run_gateway

    run_gateway(settings)
    return None


def keys(argv: list[str]) -> int:
    """``promptpulse keys create|list|revoke DEPLOYMENT`` (services/gateway/keys_cli.py)."""
    from services.gateway.keys_cli import main as keys_main

    return keys_main(argv)


if __name__ == "__main__":
    sys.exit(main())
