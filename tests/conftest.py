"""Fixtures shared by every test layer.

Integration tests talk to the real local stack (`make test` starts it: Apache Kafka on
127.0.0.1:9092, PostgreSQL on 127.0.0.1:5432). They never skip when it is missing: a missing
broker is a failure with a message saying how to start it, so a green run always means the
real components were exercised.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.settings import ServiceSettings, load_settings

STACK_HINT = "start the local stack first: `make stack-up` (or run the whole suite with `make test`)"


@pytest.fixture(scope="session")
def settings() -> ServiceSettings:
    return load_settings(ServiceSettings)


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: ServiceSettings) -> str:
    return settings.kafka.bootstrap_servers


@pytest.fixture(scope="session")
def database_url(settings: ServiceSettings) -> str:
    return settings.database_url.get_secret_value()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty database for one test (dropped afterwards); yields its DSN."""
    name = f"it_{uuid.uuid4().hex[:16]}"
    try:
        admin = await asyncpg.connect(database_url, timeout=10)
    except OSError as exc:
        pytest.fail(f"PostgreSQL unreachable ({exc}); {STACK_HINT}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(database_url, name)
        await _drop_database(admin, name)
    finally:
        await admin.close()


async def _drop_database(admin: asyncpg.Connection, name: str) -> None:
    # FORCE cannot end an autovacuum worker (a superuser process) that happens to be busy in the
    # database; it finishes within moments, so try again before leaving the database behind.
    for attempt in range(20):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            await asyncio.sleep(0.25 * (attempt + 1))
    warnings.warn(f"could not drop test database {name}", stacklevel=1)


@pytest.fixture
def unique_name() -> str:
    """A fresh name for topics and consumer groups, so tests never see each other's data."""
    return f"it-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory):
    """A broker of the test's own (see tests/support/private_kafka.py), stopped afterwards."""
    from tests.support.private_kafka import PrivateKafka

    broker = PrivateKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()
