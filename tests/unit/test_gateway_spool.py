"""The gateway's on-disk event spool: order, bounds, acks, crash damage and restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.gateway.events.settings import PublisherSection
from services.gateway.events.spool import (
    MAGIC,
    SEGMENT_SUFFIX,
    Spool,
    SpoolError,
    SpoolFull,
    SpoolLocked,
    SpoolRecord,
    encode_record,
    record_size,
)
from shared.settings import SettingsError, load_settings


def rec(n: int, size: int = 40) -> SpoolRecord:
    return SpoolRecord(
        topic="pp.inference",
        key=f"req-{n}".encode(),
        value=bytes([n % 256]) * size,
        headers=(("pp-event-type", b"inference.request"), ("traceparent", b"00-abc-def-01")),
    )


def opened(directory: Path, *, max_bytes: int = 1 << 20, segment_bytes: int = 4096) -> Spool:
    spool = Spool(directory, max_bytes, segment_bytes)
    spool.open()
    return spool


def read_all(spool: Spool, *, ack: bool = True, batch: int = 7) -> list[SpoolRecord]:
    out: list[SpoolRecord] = []
    while spool.pending_bytes:
        got = spool.read(batch, 1 << 20)
        assert got.records or got.corrupt_records, "pending bytes but nothing read"
        out += got.records
        if not ack:
            break
        spool.ack(got)
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + SEGMENT_SUFFIX))


def test_records_round_trip_with_keys_headers_and_no_key(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    records = [rec(1), SpoolRecord("pp.tokens", None, b"", ()), rec(2, size=0)]
    spool.append(records)
    assert read_all(spool) == records
    spool.close()


def test_record_size_is_what_the_spool_writes(tmp_path: Path) -> None:
    record = rec(3, size=123)
    assert record_size(record.topic, record.key, record.value, record.headers) == len(encode_record(record))
    spool = opened(tmp_path)
    assert spool.append([record]) == len(encode_record(record))
    assert spool.bytes == spool.pending_bytes == len(encode_record(record))
    spool.close()


def test_read_does_not_consume_until_acked(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.append([rec(n) for n in range(5)])
    first = spool.read(2, 1 << 20)
    again = spool.read(2, 1 << 20)
    assert first.records == again.records == [rec(0), rec(1)]
    spool.ack(first)
    assert spool.read(10, 1 << 20).records == [rec(2), rec(3), rec(4)]
    spool.close()


def test_read_respects_byte_budget_but_always_returns_one(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 16)
    spool.append([rec(n, size=1000) for n in range(4)])
    assert len(spool.read(100, 1).records) == 1
    assert len(spool.read(100, 2500).records) == 3  # stops once the budget is reached
    spool.close()


def test_order_kept_across_many_segments_and_batches(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1024)
    expected = []
    for start in range(0, 200, 9):
        batch = [rec(n) for n in range(start, min(start + 9, 200))]
        spool.append(batch)
        expected += batch
    assert len(segments(tmp_path)) > 5
    assert read_all(spool) == expected
    spool.close()


def test_acked_segments_are_deleted_and_space_freed(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1024)
    spool.append([rec(n) for n in range(60)])
    files_before, bytes_before = len(segments(tmp_path)), spool.bytes
    batch = spool.read(30, 1 << 20)
    spool.ack(batch)
    assert len(segments(tmp_path)) < files_before
    assert spool.bytes < bytes_before
    read_all(spool)
    assert segments(tmp_path) == []
    assert spool.bytes == spool.pending_bytes == 0
    spool.close()


def test_append_over_the_limit_writes_nothing(tmp_path: Path) -> None:
    one = len(encode_record(rec(0)))
    spool = opened(tmp_path, max_bytes=one * 3, segment_bytes=one * 3)
    spool.append([rec(0), rec(1)])
    with pytest.raises(SpoolFull):
        spool.append([rec(2), rec(3)])
    assert spool.bytes == one * 2
    spool.append([rec(2)])  # exactly at the limit is fine
    with pytest.raises(SpoolFull):
        spool.append([rec(3)])
    assert read_all(spool) == [rec(0), rec(1), rec(2)]
    spool.append([rec(3)])  # room again once delivered
    assert read_all(spool) == [rec(3)]
    spool.close()


def test_torn_tail_after_a_crash_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 16)
    spool.append([rec(n) for n in range(5)])
    spool.close()
    [segment] = segments(tmp_path)
    # A crash in the middle of writing the last record: only part of it reached the disk.
    os.truncate(segment, segment.stat().st_size - 17)
    spool = opened(tmp_path, segment_bytes=1 << 16)
    assert read_all(spool) == [rec(n) for n in range(4)]
    assert spool.stats.corrupt_records == 1
    assert spool.pending_bytes == 0
    spool.close()


def test_torn_header_is_skipped_too(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 16)
    spool.append([rec(0)])
    spool.close()
    [segment] = segments(tmp_path)
    with open(segment, "ab") as f:
        f.write(MAGIC + b"\x05")  # a header cut off after five bytes
    spool = opened(tmp_path, segment_bytes=1 << 16)
    assert read_all(spool) == [rec(0)]
    assert spool.stats.corrupt_records == 1
    spool.close()


def test_crc_mismatch_skips_one_record_and_resumes_at_the_next(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 16)
    spool.append([rec(n) for n in range(5)])
    spool.close()
    [segment] = segments(tmp_path)
    one = len(encode_record(rec(0)))
    data = bytearray(segment.read_bytes())
    data[2 * one + one // 2] ^= 0xFF  # a flipped bit inside record 2's payload
    segment.write_bytes(bytes(data))
    spool = opened(tmp_path, segment_bytes=1 << 16)
    assert read_all(spool) == [rec(0), rec(1), rec(3), rec(4)]
    assert spool.stats.corrupt_records == 1
    assert spool.stats.corrupt_bytes == one
    spool.close()


def test_restart_resumes_after_the_acked_position(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1024)
    spool.append([rec(n) for n in range(40)])
    delivered = spool.read(15, 1 << 20)
    spool.ack(delivered)
    spool.close()

    spool = opened(tmp_path, segment_bytes=1024)
    spool.append([rec(n) for n in range(40, 45)])  # new events go behind the old ones
    assert read_all(spool) == [rec(n) for n in range(15, 45)]
    spool.close()

    spool = opened(tmp_path, segment_bytes=1024)
    assert spool.pending_bytes == 0
    assert read_all(spool) == []
    spool.close()


def test_restart_never_appends_to_an_old_segment(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 16)
    spool.append([rec(0)])
    spool.close()
    spool = opened(tmp_path, segment_bytes=1 << 16)
    spool.append([rec(1)])
    assert len(segments(tmp_path)) == 2
    assert read_all(spool) == [rec(0), rec(1)]
    spool.close()


def test_unreadable_cursor_means_resending_not_losing(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 16)
    spool.append([rec(n) for n in range(4)])
    spool.ack(spool.read(2, 1 << 20))
    spool.close()
    (tmp_path / "cursor").write_text("garbage")
    spool = opened(tmp_path, segment_bytes=1 << 16)
    assert read_all(spool) == [rec(n) for n in range(4)]  # duplicates, never a gap
    spool.close()


def test_a_spool_directory_belongs_to_one_process(tmp_path: Path) -> None:
    first = opened(tmp_path)
    with pytest.raises(SpoolLocked, match="SPOOL_DIR"):
        opened(tmp_path)
    first.close()
    opened(tmp_path).close()  # free again once closed


def test_a_segment_that_cannot_be_made_private_is_a_spool_error_and_leaves_the_directory_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opened(tmp_path)
    spool.append([rec(1)])
    spool.close()
    real_chmod = Path.chmod

    def refused_for_segments(path: Path, mode: int, **kwargs: object) -> None:
        # What a segment owned by another user gives (this test may run as root, who is never refused).
        if path.suffix == SEGMENT_SUFFIX:
            raise PermissionError(1, "Operation not permitted", str(path))
        real_chmod(path, mode, **kwargs)

    monkeypatch.setattr(Path, "chmod", refused_for_segments)
    with pytest.raises(SpoolError, match="cannot recover spool directory.*Operation not permitted"):
        opened(tmp_path)
    monkeypatch.undo()
    spool = opened(tmp_path)  # not SpoolLocked: the failed open closed its lock file
    assert read_all(spool, ack=False) == [rec(1)]
    spool.close()


def test_spool_limits_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="spool_segment_bytes"):
        PublisherSection(spool_max_bytes=2 << 20, spool_segment_bytes=4 << 20)
    with pytest.raises(ValueError, match="max_event_bytes"):
        PublisherSection(
            spool_max_bytes=1 << 20, spool_segment_bytes=1 << 18, token_chunk_share=0.5, max_event_bytes=900_000
        )
    PublisherSection(spool_max_bytes=4 << 20, spool_segment_bytes=1 << 20)


def test_publisher_settings_come_from_the_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import BaseModel, Field

    from shared.settings import ServiceSettings

    # The gateway's settings embed the section as ``publisher`` (its own module owns that class).
    class Gateway(BaseModel):
        publisher: PublisherSection = Field(default_factory=PublisherSection)

    class Settings(ServiceSettings):
        gateway: Gateway = Field(default_factory=Gateway)

    monkeypatch.setenv("PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_MAX_BYTES", "8388608")
    assert load_settings(Settings).gateway.publisher.spool_max_bytes == 8 << 20
    monkeypatch.setenv("PROMPTPULSE_GATEWAY__PUBLISHER__SEND_TIMEOUT_SECONDS", "-1")
    with pytest.raises(SettingsError, match="PROMPTPULSE_GATEWAY__PUBLISHER__SEND_TIMEOUT_SECONDS"):
        load_settings(Settings)


@pytest.fixture
def permissive_umask():
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_spool_files_are_private_whatever_the_umask(tmp_path: Path, permissive_umask) -> None:
    """Segments hold request inputs: 0700 folder, 0600 files, even under umask 000."""
    directory = tmp_path / "spool"
    spool = opened(directory, segment_bytes=1024)
    spool.append([rec(n) for n in range(40)])  # several segments
    spool.ack(spool.read(5, 1 << 20))  # writes the cursor
    spool.close()
    assert _mode(directory) == 0o700
    files = sorted(directory.iterdir())
    assert len(segments(directory)) > 1 and directory / "cursor" in files and directory / "lock" in files
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_a_spool_left_world_readable_is_made_private_at_open(tmp_path: Path, permissive_umask) -> None:
    directory = tmp_path / "spool"
    spool = opened(directory)
    spool.append([rec(1)])
    spool.close()
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
    spool = opened(directory)  # as an older version left it
    assert read_all(spool, ack=False) == [rec(1)]
    spool.close()
    assert _mode(directory) == 0o700
    assert {p.name: _mode(p) for p in directory.iterdir()} == {p.name: 0o600 for p in directory.iterdir()}
