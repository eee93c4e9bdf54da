"""Publishing outcomes: wait for every record's acknowledgement; a failure leaves no error unseen."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime
from typing import Any

import pytest

from services.processor.evaluation import outcomes
from services.processor.publisher import Publisher
from shared.events.builders import new_meta
from shared.events.messages import Evaluation, EvaluationErrorType


class BrokerDown(Exception):
    pass


class PendingProducer:
    """aiokafka's send as far as publishing needs it: queued at once, acknowledged later."""

    def __init__(self) -> None:
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, *, value: bytes | None, key: bytes | None, headers: Any) -> asyncio.Future[Any]:
        delivery = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


def _evaluations(count: int) -> list[Evaluation]:
    meta = new_meta(request_id="r-1", deployment="shop", request_start_time=datetime.now(UTC))
    internal = EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
    return [outcomes.error(meta, f"metric_{n}", internal, "x") for n in range(count)]


async def test_returns_only_once_every_record_is_acknowledged() -> None:
    producer = PendingProducer()
    publishing = asyncio.create_task(Publisher(producer, "ev", "dl").publish_evaluations(_evaluations(3)))
    await asyncio.sleep(0)
    producer.deliveries[2].set_result(None)
    producer.deliveries[0].set_result(None)
    await asyncio.sleep(0)
    assert not publishing.done()  # the second one is not acknowledged yet
    producer.deliveries[1].set_result(None)
    await asyncio.wait_for(publishing, 1)


async def test_a_failed_publish_leaves_no_delivery_error_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        producer = PendingProducer()
        publishing = asyncio.create_task(Publisher(producer, "ev", "dl").publish_evaluations(_evaluations(2)))
        await asyncio.sleep(0)
        producer.deliveries[0].set_exception(BrokerDown("first"))
        with pytest.raises(BrokerDown):
            await publishing
        producer.deliveries[1].set_exception(BrokerDown("second"))  # fails after the caller gave up
        await asyncio.sleep(0)
        producer.deliveries.clear()
        del publishing
        gc.collect()
        assert reported == []  # asyncio reports "Future exception was never retrieved" otherwise
    finally:
        loop.set_exception_handler(previous)
