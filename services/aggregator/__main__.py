"""``python -m services.aggregator`` (``promptpulse aggregator``): migrate, then ingest and serve.

Settings come from the environment (services/aggregator/settings.py). SIGTERM and SIGINT stop
it gracefully: intake stops, the batch in flight commits, the pool closes, telemetry flushes.
:func:`migrate_schema` is ``promptpulse migrate``: the CLI reaches the aggregator through this
entry point only.
"""

from __future__ import annotations

import sys

from aiohttp import web

from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from shared.deployments import DeploymentConfigError
from shared.entrypoint import run_service
from shared.settings import load_settings
from shared.telemetry.setup import setup_telemetry, shutdown_telemetry


def main() -> int:
    return run_service("aggregator", AggregatorSettings, serve, refusals=(DeploymentConfigError,))


def serve(settings: AggregatorSettings) -> None:
    telemetry = setup_telemetry("aggregator", settings)
    section = settings.aggregator
    try:
        web.run_app(
            create_app(settings),
            host=section.host,
            port=section.port,
            access_log=None,
            print=None,
            shutdown_timeout=section.shutdown_wait_seconds,
        )
    finally:
        shutdown_telemetry(telemetry)


def migrate_schema() -> int:
    """Apply the pending schema migrations (services/aggregator/db/migrate.py) and say which."""
    import asyncio

    from services.aggregator.db.migrate import migrate
    from shared.settings import ServiceSettings

    settings = load_settings(ServiceSettings)
    applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
