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
- no agent: the intake topic's records go from faust's consumer straight to the handler
  (:class:`IntakeConsumer`), not through faust's conductor, event, stream buffer and agent. faust's
  loop awaits each record's delivery in ``wait_first``, which makes four tasks per record; with
  the rest of that path it was about half of a do-nothing faust agent's CPU per event
  (docs/processor.md, "Session 11"). faust still does everything else: the group, the
  assignment, fetching in its thread, pausing the flow during a rebalance, and the commits the
  processor asks for.
- faust creates its own internal topic (``<group>-__assignor-__leader``) through its admin
  client, so it works on brokers with topic auto-creation off; it gets the configured
  replication factor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, ConsumerT
from faust.types.auth import CredentialsT
from faust.types.core import HeadersArg
from mode import Service, ServiceT

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


# Records handed over between yields to the loop, as faust's own loop does: a fetched batch can
# hold thousands, and the loop's other tasks (judge workers, the commit timer) must still run.
YIELD_EVERY = 100


class ProcessorApp(faust.App):
    """faust's App without the Monitor among its sensors, whose consumer hands the intake topic's
    records to the handler itself (see the module's docstring)."""

    intake_topic: str = ""
    intake_handler: Handler | None = None

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        dependencies = super().on_init_dependencies()  # attaches the Monitor; undo just that
        with contextlib.suppress(KeyError):  # called once per app; never fail the start over it
            self.sensors.remove(self.monitor)
        return dependencies

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        if not self._rebalancing_sensor_state:
            # No sensor is attached (above), so none recorded the rebalance's start, and faust
            # reads the empty record as lost: "Missing sensor state" twice per rebalance, a
            # WARNING at every start of every worker. A record of no sensors is the true one.
            self._rebalancing_sensor_state = {"sensors": 0}

    def _new_consumer(self) -> ConsumerT:
        # What faust.App makes (the transport's consumer with the app's callbacks), of our class.
        return IntakeConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.transport.loop,
        )


class IntakeConsumer(AIOKafkaConsumer):
    """faust's aiokafka consumer whose fetch loop calls the intake handler for each record of the
    intake topic, in the loop's own task. Any other topic's records take faust's way (the
    conductor, through ``wait_first``); the processor subscribes no other.

    Kept from faust's loop: records below the partition's read offset are skipped (already
    read), the read offset follows each record handed over, the loop yields every
    ``YIELD_EVERY`` records, and it ends when the consumer or the fetcher stops. Not kept: ack
    gaps and commits every N acks, which only topics consumed with acks have. The handler's
    rare awaitable (back-pressure from the full judge queue) is awaited here, as the agent
    awaited it: a rebalance pauses fetching, it does not drop the record.
    """

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        app = cast(ProcessorApp, self.app)
        intake_topic, handle = app.intake_topic, app.intake_handler
        if handle is None:
            raise RuntimeError("the processor's faust app has no intake handler")
        read_offsets = self._read_offset
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                # getmany can come back at once again and again (nothing assigned, flow paused):
                # let the loop run between calls.
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    offset = message.offset
                    read = read_offsets[tp]
                    if read is not None and offset < read:
                        continue
                    if tp.topic == intake_topic:
                        waiting = handle(tp, offset, message.key, message.value, message.headers)
                        if waiting is not None:
                            await waiting
                    else:
                        await self.wait_first(self.callback(message), self.suspend_flow.wait())
                    read_offsets[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:  # stopping anyway
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


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
    app.intake_topic, app.intake_handler = inference_topic, handler
    app.topics.add(topic)  # subscribed as an agent's topic would be; IntakeConsumer reads it
    return app
