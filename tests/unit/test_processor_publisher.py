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


class CountingProducer(PendingProducer):
    """Records, per record sent, how many loop turns had passed: one turn means one hand-over."""

    def __init__(self, refuse: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__()
        self.turns: list[int] = []
        self.turn = 0
        self.refuse = refuse

    async def send(self, topic: str, *, value: bytes | None, key: bytes | None, headers: Any) -> asyncio.Future[Any]:
        if key is not None and key.decode() in self.refuse:
            raise BrokerDown(f"cannot send {key.decode()}")
        self.turns.append(self.turn)
        return await super().send(topic, value=value, key=key, headers=headers)

    async def count_turns(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.turn += 1


def _request_evaluations(request_id: str, count: int) -> list[Evaluation]:
    meta = new_meta(request_id=request_id, deployment="shop", request_start_time=datetime.now(UTC))
    internal = EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
    return [outcomes.error(meta, f"metric_{n}", internal, "x") for n in range(count)]


async def test_gathered_publishes_go_to_the_producer_together_and_each_waits_for_its_own_acks() -> None:
    producer = CountingProducer()
    turns = asyncio.create_task(producer.count_turns())
    publisher = Publisher(producer, "ev", "dl", gather_seconds=0.05)
    first = asyncio.create_task(publisher.publish_evaluations(_request_evaluations("r-1", 2)))
    await asyncio.sleep(0.02)
    second = asyncio.create_task(publisher.publish_evaluations(_request_evaluations("r-2", 1)))
    await asyncio.sleep(0.01)
    assert producer.deliveries == []  # still gathering
    for _ in range(200):
        if len(producer.deliveries) == 3:
            break
        await asyncio.sleep(0.005)
    assert len(producer.deliveries) == 3 and len(set(producer.turns)) == 1  # one hand-over, one turn
    producer.deliveries[2].set_result(None)  # r-2's
    await asyncio.wait_for(second, 1)
    await asyncio.sleep(0)
    assert not first.done()  # r-1's are not acknowledged yet
    for delivery in producer.deliveries[:2]:
        delivery.set_result(None)
    await asyncio.wait_for(first, 1)
    turns.cancel()


async def test_a_gathered_publish_fails_alone_and_a_cancelled_one_is_never_sent() -> None:
    producer = CountingProducer(refuse={"r-bad"})
    publisher = Publisher(producer, "ev", "dl", gather_seconds=0.01)
    bad = asyncio.create_task(publisher.publish_evaluations(_request_evaluations("r-bad", 1)))
    cancelled = asyncio.create_task(publisher.publish_evaluations(_request_evaluations("r-gone", 1)))
    good = asyncio.create_task(publisher.publish_evaluations(_request_evaluations("r-good", 1)))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(BrokerDown, match="r-bad"):
        await asyncio.wait_for(bad, 1)
    for _ in range(200):
        if producer.deliveries:
            break
        await asyncio.sleep(0.005)
    assert len(producer.deliveries) == 1  # r-good's only: r-gone was cancelled before the hand-over
    producer.deliveries[0].set_result(None)
    await asyncio.wait_for(good, 1)
    assert cancelled.cancelled()


class CancellingProducer(PendingProducer):
    """Cancels ``victim`` while sending ``at``'s records: after the victim's own records went to
    the producer in the same hand-over, before the victim's task runs again."""

    def __init__(self, at: str) -> None:
        super().__init__()
        self.at = at
        self.victim: asyncio.Task[None] | None = None

    async def send(self, topic: str, *, value: bytes | None, key: bytes | None, headers: Any) -> asyncio.Future[Any]:
        if key is not None and key.decode() == self.at and self.victim is not None:
            self.victim.cancel()
        return await super().send(topic, value=value, key=key, headers=headers)


async def test_a_publish_cancelled_in_the_turn_of_its_hand_over_leaves_no_delivery_error_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        producer = CancellingProducer(at="r-later")
        publisher = Publisher(producer, "ev", "dl", gather_seconds=0.01)
        victim = asyncio.create_task(publisher.publish_evaluations(_request_evaluations("r-first", 2)))
        later = asyncio.create_task(publisher.publish_evaluations(_request_evaluations("r-later", 1)))
        producer.victim = victim
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(victim, 1)
        assert len(producer.deliveries) == 3  # r-first's two were handed over before the cancel
        for delivery in producer.deliveries[:2]:
            delivery.set_exception(BrokerDown("r-first's"))  # nobody waits for these any more
        producer.deliveries[2].set_result(None)
        await asyncio.wait_for(later, 1)
        await asyncio.sleep(0)
        producer.deliveries.clear()
        del victim
        gc.collect()
        assert reported == []  # asyncio reports "Future exception was never retrieved" otherwise
    finally:
        loop.set_exception_handler(previous)
