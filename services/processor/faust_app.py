"""The faust app of one processor worker: configuration, the inference topic, the intake agent.

Decisions that differ from faust's defaults, and why:

- ``web_enabled=False``: faust's web server binds 0.0.0.0:6066; ops endpoints are served by
  services.processor.ops on loopback instead.
- the inference topic is consumed with ``acks=False``: faust never commits it. Its ack-based
  commits can pass an event still being judged (faust-streaming #606, measured in
  docs/processor.md); the processor commits its own per-partition watermarks (watermark.py).
- raw keys and values: routing reads headers and the key first and decodes a body only when
  the request is sampled (routing.py), which is what keeps the per-event cost near faust's own.
- ``datadir`` in a private temporary folder: faust creates one even without tables, and the
  working directory is not its to litter.
- faust's Monitor sensor is not attached: it times and counts every event (about 3-4 µs of the
  stream's per-event cost, docs/processor.md "Performance") for faust's web views and sensor
  exporters, none of which the processor uses; its figures are its own (stats.py, /metrics).
  faust still calls the Monitor directly for commits and end offsets, which costs nothing per event.
- faust creates its own internal topic (``<group>-__assignor-__leader``) through its admin
  client, so it works on brokers with topic auto-creation off; it gets the configured
  replication factor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import faust
from faust.types import TP, StreamT
from faust.types.auth import CredentialsT
from faust.types.core import HeadersArg
from mode import ServiceT

from services.processor.settings import ProcessorSettings
from shared.kafka import connection_options

# One raw record of the inference topic: partition, offset, key, value, headers (faust's Message).
Handler = Callable[[TP, int, bytes | None, bytes | None, HeadersArg], Awaitable[None] | None]


def broker_credentials(settings: ProcessorSettings) -> CredentialsT | None:
    """faust's credentials object for the shared Kafka settings (None for PLAINTEXT)."""
    options = connection_options(settings)  # validates SASL/TLS settings, raises naming the variable
    protocol = options["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        mechanism=options["sasl_mechanism"],
        ssl_context=options.get("ssl_context"),
    )


class ProcessorApp(faust.App):
    """faust's App without the Monitor among its sensors (see the module's docstring)."""

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        dependencies = super().on_init_dependencies()  # attaches the Monitor; undo just that
        with contextlib.suppress(KeyError):  # called once per app; never fail the start over it
            self.sensors.remove(self.monitor)
        return dependencies


def build_faust_app(
    settings: ProcessorSettings, inference_topic: str, handler: Handler, datadir: Path
) -> faust.App:
    kafka = settings.kafka
    section = settings.processor
    app = ProcessorApp(
        settings.group_id(),
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        web_enabled=False,
        autodiscover=False,
        datadir=str(datadir),
        topic_replication_factor=kafka.replication_factor,
        topic_partitions=kafka.partitions,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=section.stream_buffer_maxsize,
        producer_acks=-1,
        broker_session_timeout=section.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, section.session_timeout_seconds / 3),
    )
    topic = app.topic(
        inference_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        acks=False,
    )

    async def intake(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            waiting = handler(message.tp, message.offset, message.key, message.value, message.headers)
            if waiting is not None:
                await waiting

    app.agent(topic, name=f"{settings.group_id()}.intake")(intake)
    return app
