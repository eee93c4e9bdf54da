"""The gateway's faster murmur2 gives aiokafka's hash for any bytes, so every key keeps its partition."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference

from shared.kafka_partitioner import KeyPartitioner, murmur2


def test_murmur2_is_aiokafkas_for_every_length_and_byte() -> None:
    rng = random.Random(7)
    for length in range(81):
        for _ in range(100):
            data = bytes(rng.randrange(256) for _ in range(length))
            assert murmur2(data) == reference(data), data
    for data in (b"\xff" * 37, b"\x80" * 5, b"", b"019af3c2-1d2e-7abc-8def-0123456789ab", b"0" * 32):
        assert murmur2(data) == reference(data), data


def test_a_key_lands_on_the_default_partitioners_partition() -> None:
    rng = random.Random(11)
    ours, default = KeyPartitioner(), DefaultPartitioner()
    for partitions in ([0], [0, 1, 2], list(range(12))):
        for _ in range(300):
            key = rng.randbytes(rng.randrange(1, 40))
            assert ours(key, partitions, partitions) == default(key, partitions, partitions)
    assert ours(None, [0, 1, 2], [1]) == 1  # no key: one of the available partitions
