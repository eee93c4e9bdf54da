"""Reading one deployment's requests of a past window back from the inference topic.

Every partition is read from the first offset whose timestamp is at or after the window's start
(``offsets_for_times``; a record's timestamp is its producer's clock, never earlier than the
request's start) up to the end offset seen when reading began, or until records are
``grace_seconds`` past the window's end (a response arrives after its request; a request
published late, from the gateway's spool, too). Routing headers skip other deployments and
other event types without decoding. A request belongs to the window when its
``request_start_time`` is in [start, end), the time the aggregator files its outcomes under.
Requests with no response in what was read are left out (and counted). Unsampled requests are
read like sampled ones: the log holds them all. The window is held in memory while judged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka.structs import TopicPartition

from services.processor.routing import REQUEST, RESPONSE, read_route
from shared.events.codec import decode
from shared.events.errors import EventDecodeError
from shared.events.messages import InferenceRequest, InferenceResponse
from shared.kafka import SettingsLike, make_consumer
from shared.sampling import sample_point


@dataclass(slots=True)
class WindowRequest:
    request: InferenceRequest
    response: InferenceResponse
    traceparent: str | None


@dataclass
class Window:
    requests: list[WindowRequest] = field(default_factory=list)
    records: int = 0
    unanswered: int = 0  # requests of the window whose response was not found
    undecodable: int = 0


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def read_window(
    settings: SettingsLike, topic: str, deployment: str, start: datetime, end: datetime, grace_seconds: float,
) -> Window:
    consumer = make_consumer(settings, group_id=None, client_id="promptpulse-processor-rejudge",
                             enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        found = await consumer.offsets_for_times({tp: _ms(start) for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        reading: set[TopicPartition] = set()
        for tp in partitions:
            at = found.get(tp)
            if at is not None and at.offset < ends[tp]:
                consumer.seek(tp, at.offset)
                reading.add(tp)
        stop_ms = _ms(end) + int(grace_seconds * 1000)
        requests: dict[str, tuple[InferenceRequest, str | None]] = {}
        responses: dict[str, InferenceResponse] = {}
        window = Window()
        while reading:
            batches = await consumer.getmany(*reading, timeout_ms=1000, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    if tp not in reading:
                        break
                    if record.offset >= ends[tp] or record.timestamp >= stop_ms:
                        reading.discard(tp)
                        break
                    window.records += 1
                    _take(record, deployment, start, end, requests, responses, window)
                if tp in reading and await consumer.position(tp) >= ends[tp]:
                    reading.discard(tp)
    finally:
        await consumer.stop()
    for request_id, (request, traceparent) in requests.items():
        response = responses.get(request_id)
        if response is None:
            window.unanswered += 1
        else:
            window.requests.append(WindowRequest(request, response, traceparent))
    return window


async def topic_partitions(consumer: Any, topic: str, wait_seconds: float = 10.0) -> list[TopicPartition]:
    """The topic's partitions, from metadata refreshed until the topic shows (a group-less
    consumer that subscribed to nothing knows no topic until asked)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        known = consumer.partitions_for_topic(topic)
        if known:
            return [TopicPartition(topic, p) for p in sorted(known)]
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} has no partitions (does it exist?)")
        await consumer._client.force_metadata_update()  # aiokafka has no public call for this
        await asyncio.sleep(0.1)


def _take(record, deployment, start, end, requests, responses, window) -> None:  # type: ignore[no-untyped-def]
    route = read_route(record.key, record.headers)
    if route.readable and (route.deployment != deployment or route.kind not in (REQUEST, RESPONSE)):
        return
    try:
        event = decode(record.value, record.headers)
    except EventDecodeError:
        window.undecodable += 1  # the live intake dead-letters it; here it is only counted
        return
    if not isinstance(event, InferenceRequest | InferenceResponse) or event.meta.deployment != deployment:
        return
    if isinstance(event, InferenceRequest):
        started = event.meta.request_start_time.ToDatetime(tzinfo=start.tzinfo)
        if start <= started < end:
            requests[event.meta.request_id] = (event, route.traceparent or event.meta.traceparent or None)
    elif isinstance(event, InferenceResponse):
        responses[event.meta.request_id] = event


def chosen(window: Window, sample: int) -> list[WindowRequest]:
    """The requests to judge, in the re-judge's order: by the request id's sampling hash (spread
    over time, unlike the time-ordered ids themselves), then id; the first ``sample`` of them
    when a sample is asked for. The same window gives the same list, which a resume relies on."""
    ordered = sorted(window.requests, key=lambda r: (sample_point(r.request.meta.request_id),
                                                     r.request.meta.request_id))
    return ordered[:sample] if sample else ordered
