"""Kafka clients with PromptPulse's defaults, built from :class:`~shared.settings.KafkaSettings`.

The factories only construct clients. They do not start them, because the caller's cleanup
context (aiohttp ``cleanup_ctx``, an ``async with``) owns start and stop, so a client is
closed if and only if it was started. aiokafka binds a client to the running event loop when
it is constructed, so call the factories from inside that loop.

Producer defaults and why:

- ``enable_idempotence=True`` and ``acks="all"``: a retried batch is written once, and an
  acknowledged event survives the loss of the partition leader. At-least-once delivery with
  no duplicates from the producer side is what the aggregator's exactly-once effect builds on.
- compression: zstd when its codec (``cramjam``) is installed, else none. On 100 KiB of
  1 KiB text-like events, aiokafka's zstd (level 3) compresses 4.7x in 1.5 ms, its lz4
  (level 9, the slow high-compression mode) 3.9x in 16 ms and its gzip (level 9) 5.4x in
  18 ms, and that CPU is taken from the event loop: in ``bench/kafka_roundtrip.py --codecs``
  lz4 and gzip lowered producer throughput below no compression at all, so neither is a
  fallback.
- ``linger_ms=5``: under load, batches fill for a few milliseconds (fewer, larger requests,
  which also compress better); at a steady 2,000 events/s it adds about that much latency,
  which no consumer of these topics notices (the gateway never waits on Kafka anyway).
  On a 2-core machine aiokafka's per-record Python cost, not the request count, bounds
  throughput, so the gain there is modest; it grows with the number of partitions.
- ``max_batch_size=128 KiB``: holds ~100 one-kilobyte events per partition batch, so a burst
  does not fragment into many small requests.

Consumer defaults: manual commits only (``enable_auto_commit=False``: an offset is committed
after its effect is durable, never on a timer), ``auto_offset_reset="earliest"`` (a new group
reads what was published before it started instead of silently skipping it), and
``isolation_level="read_committed"`` (never read an aborted transaction's records).
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.codec import has_zstd
from aiokafka.helpers import create_ssl_context

from shared.settings import KafkaSettings, ServiceSettings, SettingsError

SettingsLike = KafkaSettings | ServiceSettings


def _compression() -> str | None:
    return "zstd" if has_zstd() else None


PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "compression_type": _compression(),
    "linger_ms": 5,
    "max_batch_size": 128 * 1024,
    "request_timeout_ms": 30_000,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
}


class KafkaSettingsError(SettingsError):
    """Kafka settings that cannot work together (e.g. SASL without a user); names the variable."""


def kafka_settings(settings: SettingsLike) -> KafkaSettings:
    """The Kafka section of either a service's settings or a bare KafkaSettings."""
    return settings.kafka if isinstance(settings, ServiceSettings) else settings


def _ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    if (kafka.ssl_certfile is None) != (kafka.ssl_keyfile is None):
        raise KafkaSettingsError(
            "PROMPTPULSE_KAFKA__SSL_CERTFILE and PROMPTPULSE_KAFKA__SSL_KEYFILE go together "
            "(mutual TLS needs both)"
        )
    try:
        return create_ssl_context(
            cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        # Which file failed, never its contents.
        raise KafkaSettingsError(
            f"cannot build the Kafka TLS context from PROMPTPULSE_KAFKA__SSL_* files: {exc}"
        ) from None


def connection_options(settings: SettingsLike) -> dict[str, Any]:
    """Keyword arguments every aiokafka client (producer, consumer, admin) shares.

    Raises KafkaSettingsError when SASL is selected without its mechanism or credentials, or
    the TLS files cannot be loaded.
    """
    kafka = kafka_settings(settings)
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL_"):
        missing = [
            f"PROMPTPULSE_KAFKA__{name.upper()}"
            for name in ("sasl_mechanism", "sasl_username", "sasl_password")
            if getattr(kafka, name) is None
        ]
        password = kafka.sasl_password
        if missing or password is None:  # password is None only when it is in missing
            raise KafkaSettingsError(
                f"security_protocol {kafka.security_protocol} needs {', '.join(missing)}"
            )
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = password.get_secret_value()
    return options


def make_producer(settings: SettingsLike, client_id: str, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all, compressed producer (not started). ``overrides`` win."""
    options = {**connection_options(settings), **PRODUCER_DEFAULTS, "client_id": client_id}
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: SettingsLike,
    *topics: str,
    group_id: str | None,
    client_id: str,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A manually committed consumer (not started), subscribed to ``topics`` if any are given.

    ``group_id=None`` makes a group-less consumer (for ``assign()``), which cannot commit.
    """
    options = {
        **connection_options(settings),
        **CONSUMER_DEFAULTS,
        "group_id": group_id,
        "client_id": client_id,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def make_admin(settings: SettingsLike, client_id: str, **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client (not started) with the same connection settings as the others."""
    options = {**connection_options(settings), "client_id": client_id}
    options.update(overrides)
    return AIOKafkaAdminClient(**options)
