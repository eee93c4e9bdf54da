"""The aggregator application's typed keys: the resources ``app.py`` opens and the routes read.

A module of its own so that the routes outside ``app.py`` (``/metrics``) can name them without
importing the module that wires everything in. The query API is a sub-application with keys of
its own (``services/aggregator/api/state.py``).
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from services.aggregator.ingest.consumer import Ingestor
from services.aggregator.ingest.stall import IntakeWatch
from services.aggregator.monitors.service import MonitorService
from services.aggregator.retention import PartitionCache
from services.aggregator.settings import AggregatorSettings
from shared.deployments import DeploymentFolder

SETTINGS = web.AppKey("settings", AggregatorSettings)
POOL = web.AppKey("pool", asyncpg.Pool)
# The deployments folder as parsed once at start-up (None: the folder does not exist).
DEPLOYMENTS = web.AppKey[DeploymentFolder | None]("deployments")
PARTITIONS = web.AppKey("partitions", PartitionCache)
INGESTOR = web.AppKey("ingestor", Ingestor)
STALLS = web.AppKey("stalls", IntakeWatch)
MONITORS = web.AppKey("monitors", MonitorService)
QUERY_API = web.AppKey("query_api", web.Application)  # the /v1 sub-application
