"""What the query API's handlers share, built once at start-up (see ``api.setup``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from services.aggregator.api.auth import Authenticator
from services.aggregator.api.errors import not_found
from services.aggregator.api.settings import ApiSection
from services.aggregator.api.stream import MetricsHub
from services.aggregator.db.pool import DbConnection
from services.aggregator.rejudge.kafka_side import RejudgeLinks
from services.aggregator.settings import AggregatorSettings
from shared.deployments import Deployment


@dataclass
class ApiState:
    settings: AggregatorSettings
    section: ApiSection
    pool: asyncpg.Pool
    deployments: dict[str, Deployment]  # from the deployments folder ({} without one)
    auth: Authenticator
    hub: MetricsHub
    responses: Counter = field(default_factory=Counter)  # (route, status) -> count
    rejudge: RejudgeLinks | None = None  # the re-judge outbox, progress reader and retention check

    async def require_deployment(self, conn: DbConnection, name: str) -> Deployment | None:
        """The deployment's file (None if it only appears in the data); 404 if neither knows it."""
        if name in self.deployments:
            return self.deployments[name]
        if await conn.fetchval("SELECT true FROM deployment_variants WHERE deployment = $1 LIMIT 1", name):
            return None
        raise not_found(f"no deployment named {name!r}", "deployment")


API = web.AppKey("promptpulse_api", ApiState)
