"""The gateway's producer partitions each key exactly as aiokafka's default partitioner does."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from services.gateway.events.delivery import KeyHashMemo
from shared.events.builders import new_event_id


def test_same_partition_as_the_default_for_every_key_and_partition_count() -> None:
    memo, default = KeyHashMemo(), DefaultPartitioner()
    draw = random.Random(3)
    for count in (1, 2, 3, 7, 12, 64):
        partitions = list(range(count))
        for _ in range(500):
            key = new_event_id().encode() if draw.random() < 0.5 else draw.randbytes(draw.randrange(0, 40))
            expected = default(key, partitions, partitions)
            assert memo(key, partitions, partitions) == expected  # computed
            assert memo(key, partitions, partitions) == expected  # remembered


def test_remembered_hashes_are_bounded() -> None:
    memo = KeyHashMemo()
    for _ in range(KeyHashMemo.MAX_KEYS + 10):
        memo(new_event_id().encode(), [0, 1, 2], [0, 1, 2])
    assert len(memo._hashes) <= KeyHashMemo.MAX_KEYS


def test_no_key_goes_to_some_available_partition() -> None:
    assert KeyHashMemo()(None, [0, 1, 2], [1]) == 1
