"""The aggregator's asyncpg pool, built from the shared database settings."""

from __future__ import annotations

import ssl
from typing import Any

import asyncpg
import asyncpg.pool

from shared.settings import ServiceSettings

# A connection of its own or one lent by the pool (asyncpg's proxy to it): the query functions
# take either.
DbConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def ssl_option(settings: ServiceSettings) -> Any:
    """asyncpg's ``ssl`` argument for PROMPTPULSE_DATABASE__SSL (libpq's sslmode names)."""
    database = settings.database
    if database.ssl in ("verify-ca", "verify-full"):
        context = ssl.create_default_context(
            cafile=str(database.ssl_rootcert) if database.ssl_rootcert else None
        )
        context.check_hostname = database.ssl == "verify-full"
        return context
    return database.ssl


async def create_pool(settings: ServiceSettings, **overrides: Any) -> asyncpg.Pool:
    options: dict[str, Any] = {
        "min_size": settings.database.pool_min_size,
        "max_size": settings.database.pool_max_size,
        "ssl": ssl_option(settings),
        # A dead server must not hang a batch for the OS's TCP timeout.
        "timeout": 10,
        "command_timeout": 60,
    }
    options.update(overrides)
    return await asyncpg.create_pool(settings.database_url.get_secret_value(), **options)
