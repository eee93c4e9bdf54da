"""The spool's record format: ``magic | length | crc32(length, payload) | payload``.

The payload holds one Kafka record (topic, key or none, value, headers) with explicit lengths,
so a record parses exactly or not at all. The CRC covers the length too: a damaged length
cannot make the reader swallow the next record as part of this one.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"PPsp"
HEADER = struct.Struct("<4sII")  # magic, payload length, crc32 of (length bytes + payload)
_LENGTH = struct.Struct("<I")
_PAYLOAD_HEAD = struct.Struct("<HIIH")  # topic length, key length, value length, header count
_HEADER_HEAD = struct.Struct("<HI")  # header name length, header value length
_NO_KEY = 0xFFFFFFFF
# No record is this big (events are capped far below); a larger length is corruption.
MAX_PAYLOAD = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One Kafka record as it will be sent: topic, key, value and headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def record_size(topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> int:
    """Bytes a record takes in a segment (what the spool's limit counts)."""
    size = HEADER.size + _PAYLOAD_HEAD.size + len(topic.encode()) + len(value)
    size += len(key) if key is not None else 0
    for name, header_value in headers:
        size += _HEADER_HEAD.size + len(name.encode()) + len(header_value)
    return size


def encode_record(record: SpoolRecord) -> bytes:
    topic = record.topic.encode()
    key = record.key
    parts = [
        _PAYLOAD_HEAD.pack(
            len(topic), _NO_KEY if key is None else len(key), len(record.value), len(record.headers)
        ),
        topic,
        key or b"",
        record.value,
    ]
    for name, header_value in record.headers:
        name_bytes = name.encode()
        parts += [_HEADER_HEAD.pack(len(name_bytes), len(header_value)), name_bytes, header_value]
    payload = b"".join(parts)
    length = _LENGTH.pack(len(payload))
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload, zlib.crc32(length))) + payload


def decode_payload(payload: bytes) -> SpoolRecord:
    """Raises ValueError (or struct.error) when the payload does not parse exactly."""
    topic_len, key_len, value_len, header_count = _PAYLOAD_HEAD.unpack_from(payload, 0)
    at = _PAYLOAD_HEAD.size

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(payload):
            raise ValueError("field runs past the record")
        chunk = payload[at : at + n]
        at += n
        return chunk

    topic = take(topic_len).decode()
    key = None if key_len == _NO_KEY else take(key_len)
    value = take(value_len)
    headers = []
    for _ in range(header_count):
        name_len, header_len = _HEADER_HEAD.unpack_from(payload, at)
        at += _HEADER_HEAD.size
        headers.append((take(name_len).decode(), take(header_len)))
    if at != len(payload):
        raise ValueError("trailing bytes after the record")
    return SpoolRecord(topic, key, value, tuple(headers))


def read_record(reader: BinaryIO, available: int) -> tuple[SpoolRecord | None, int]:
    """The record at the reader's position and its size, or (None, 0) if it is damaged or cut
    off (``available`` bytes remain in the segment)."""
    header = reader.read(HEADER.size)
    if len(header) < HEADER.size:
        return None, 0
    magic, length, crc = HEADER.unpack(header)
    if magic != MAGIC or length > MAX_PAYLOAD or HEADER.size + length > available:
        return None, 0
    payload = reader.read(length)
    if len(payload) != length or zlib.crc32(payload, zlib.crc32(_LENGTH.pack(length))) != crc:
        return None, 0
    try:
        return decode_payload(payload), HEADER.size + length
    except (ValueError, struct.error):  # UnicodeDecodeError is a ValueError
        return None, 0
