"""A bounded on-disk spool of Kafka records: append-only segment files, read and acked in order.

The gateway writes events here while the broker is unreachable, and sends them on, oldest first,
once it is back. The file format is built for crashes:

- A segment file (``<seq>.seg``, seq zero-padded so names sort in write order) is only ever
  appended to, and every append is one fsync'd batch. After a restart the spool never appends
  to an old segment, so a torn record can only sit at the tail of a segment.
- Each record is ``magic | length | crc32(length, payload) | payload`` (spool_format.py). A
  record whose magic, length or CRC is wrong (a torn write after a power cut, a flipped bit) is
  skipped and counted; reading resumes at the next magic, so one bad record never costs the
  records after it.
- The acked position is kept in a small ``cursor`` file, replaced atomically after each ack.
  Whole segments behind it are deleted. Losing the cursor (it is not fsync'd) only means some
  records are sent twice after a crash, which consumers tolerate (they dedupe on event ids).

The spool is synchronous and thread-safe (one lock): the publisher calls it through
``asyncio.to_thread`` so fsyncs never stall the event loop. One spool directory belongs to one
process at a time, enforced with an advisory lock (:class:`SpoolLocked`).

Segments hold request inputs and outputs: the folder is 0700 and every file 0600, whatever the
process umask (set explicitly, and repaired at open for a spool left by an older version).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

from services.gateway.events.spool_format import (
    MAGIC,
    SpoolRecord,
    encode_record,
    read_record,
    record_size,
)

__all__ = [
    "MAGIC",
    "Position",
    "Spool",
    "SpoolBatch",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "SpoolRecord",
    "SpoolStats",
    "encode_record",
    "record_size",
]

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
CURSOR_FILE = "cursor"
LOCK_FILE = "lock"
DIR_MODE = 0o700
FILE_MODE = 0o600


def _private_file(path: Path, flags: int) -> int:
    """A file descriptor of ``path``, created or not, left readable by its owner only."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask only ever removes bits; an older file may have more
    except OSError:
        os.close(fd)
        raise
    return fd


class SpoolError(Exception):
    """The spool cannot be used (I/O error, bad directory)."""


class SpoolFull(SpoolError):
    """Appending would take the spool over its byte limit; nothing was written."""


class SpoolLocked(SpoolError):
    """Another process holds this spool directory."""


class Position(NamedTuple):
    """A place in the spool: a segment's sequence number and a byte offset in it."""

    segment: int
    offset: int


@dataclass(slots=True)
class SpoolBatch:
    """Records read from the spool, and the position just after them (to ack once delivered)."""

    records: list[SpoolRecord]
    end: Position
    corrupt_records: int = 0
    corrupt_bytes: int = 0


@dataclass(slots=True)
class SpoolStats:
    records_appended: int = 0
    records_acked: int = 0
    # Damaged regions skipped while reading (one region may have held several records).
    corrupt_records: int = 0
    corrupt_bytes: int = 0


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int


@dataclass
class Spool:
    """A bounded, crash-safe FIFO of :class:`SpoolRecord` in ``directory``."""

    directory: Path
    max_bytes: int
    segment_bytes: int
    stats: SpoolStats = field(default_factory=SpoolStats)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._cursor = Position(0, 0)
        self._next_seq = 0
        self._writer: BinaryIO | None = None
        self._lock_fd: int | None = None
        self._bytes = 0
        self._pending = 0

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Take the directory, recover its segments and cursor. Raises SpoolLocked, SpoolError."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            os.chmod(self.directory, DIR_MODE)  # mkdir's mode is masked by the umask; an old folder kept its own
            fd = _private_file(self.directory / LOCK_FILE, os.O_RDWR)
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolLocked(
                f"spool directory {self.directory} is in use by another process "
                "(give each gateway process its own PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_DIR)"
            ) from None
        try:
            with self._lock:
                self._recover()
        except BaseException as exc:
            os.close(fd)  # a spool that did not open must not keep the directory locked
            if isinstance(exc, OSError):
                raise SpoolError(f"cannot recover spool directory {self.directory}: {exc}") from exc
            raise
        self._lock_fd = fd

    def close(self) -> None:
        with self._lock:
            self._close_writer()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def _recover(self) -> None:
        segments = []
        for path in self.directory.glob("*" + SEGMENT_SUFFIX):
            stem = path.name[: -len(SEGMENT_SUFFIX)]
            if stem.isdigit():
                path.chmod(FILE_MODE)  # written by a version that left them world-readable
                segments.append(_Segment(int(stem), path, path.stat().st_size))
        segments.sort(key=lambda s: s.seq)
        cursor = self._read_cursor()
        first = segments[0].seq if segments else 0
        if cursor is None or cursor.segment < first:
            cursor = Position(first, 0)
        for segment in [s for s in segments if s.seq < cursor.segment]:
            segment.path.unlink(missing_ok=True)
        self._segments = [s for s in segments if s.seq >= cursor.segment]
        head = self._segments[0] if self._segments else None
        if head is None or head.seq != cursor.segment or cursor.offset > head.size:
            cursor = Position(head.seq if head else cursor.segment, 0)
        self._cursor = cursor
        # New writes always go to a fresh segment, so a torn tail stays at the end of its file.
        self._next_seq = max([cursor.segment] + [s.seq + 1 for s in self._segments])
        self._recount()
        if self._pending:
            log.info(
                "spool holds events from an earlier run",
                extra={"spool_dir": str(self.directory), "spool_bytes": self._pending},
            )

    def _read_cursor(self) -> Position | None:
        try:
            text = (self.directory / CURSOR_FILE).read_text()
            segment, offset = (int(part) for part in text.split())
            if segment < 0 or offset < 0:
                raise ValueError("negative")
            return Position(segment, offset)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # Re-sending from the start of the oldest segment only costs duplicates.
            log.warning("ignoring unreadable spool cursor", extra={"error": str(exc)})
            return None

    # -- sizes -----------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes on disk (acked records count until their whole segment is deleted)."""
        return self._bytes

    @property
    def pending_bytes(self) -> int:
        """Bytes not acked yet; 0 means the spool is empty."""
        return self._pending

    @property
    def room(self) -> int:
        return max(0, self.max_bytes - self._bytes)

    def _recount(self) -> None:
        self._bytes = sum(s.size for s in self._segments)
        self._pending = self._bytes - (self._cursor.offset if self._segments else 0)

    # -- writing ---------------------------------------------------------------------------

    def append(self, records: Sequence[SpoolRecord]) -> int:
        """Write ``records`` after everything already spooled, fsync'd; returns bytes written.

        All or nothing: raises SpoolFull (nothing written) when they do not fit under
        ``max_bytes``, SpoolError on an I/O error (the partial write is cut off again).
        """
        blobs = [encode_record(r) for r in records]
        total = sum(len(b) for b in blobs)
        if not blobs:
            return 0
        with self._lock:
            if self._bytes + total > self.max_bytes:
                raise SpoolFull(
                    f"spool full: {self._bytes} + {total} bytes > limit {self.max_bytes}"
                )
            # (segment, its size before this batch) for every segment the batch writes to
            touched: list[tuple[_Segment, int]] = []
            try:
                for blob in blobs:
                    segment, writer = self._writable_segment(len(blob), touched)
                    writer.write(blob)
                    segment.size += len(blob)
                self._sync_writer()
            except OSError as exc:
                self._undo(touched)
                raise SpoolError(f"cannot write the spool in {self.directory}: {exc}") from exc
            self._bytes += total
            self._pending += total
            self.stats.records_appended += len(blobs)
            return total

    def _writable_segment(
        self, size: int, touched: list[tuple[_Segment, int]]
    ) -> tuple[_Segment, BinaryIO]:
        active = self._segments[-1] if self._writer is not None else None
        if active is not None and active.size > 0 and active.size + size > self.segment_bytes:
            # A sealed segment is fsync'd as it is sealed; the batch's last fsync covers the rest.
            self._sync_writer()
            self._close_writer()
            active = None
        if active is None:
            seq = self._next_seq
            self._next_seq += 1
            path = self.directory / f"{seq:020d}{SEGMENT_SUFFIX}"
            self._writer = os.fdopen(_private_file(path, os.O_WRONLY | os.O_APPEND), "ab")
            active = _Segment(seq, path, 0)
            self._segments.append(active)
            if len(self._segments) == 1:
                self._cursor = Position(seq, 0)
            touched.append((active, -1))
            self._fsync_directory()  # the new file's name must survive a crash too
        elif not any(segment is active for segment, _ in touched):
            touched.append((active, active.size))
        writer = self._writer
        assert writer is not None  # an active segment always has its writer open (see the top)
        return active, writer

    def _sync_writer(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())

    def _undo(self, touched: list[tuple[_Segment, int]]) -> None:
        """Cut a failed batch off again, so the spool holds exactly the batches that succeeded."""
        self._close_writer()  # never append after a failed write: the next batch starts afresh
        for segment, start in touched:
            try:
                if start < 0:
                    segment.path.unlink(missing_ok=True)
                    self._segments.remove(segment)
                else:
                    os.truncate(segment.path, start)
                    segment.size = start
            except OSError:
                # Cannot cut it off: the reader will skip the damaged tail and count it.
                try:
                    segment.size = segment.path.stat().st_size
                except OSError:
                    segment.size = max(start, 0)
        if not self._segments:
            self._cursor = Position(self._next_seq, 0)
        self._recount()

    def _close_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
            self._writer = None

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading and acking ------------------------------------------------------------------

    def read(self, max_records: int, max_bytes: int) -> SpoolBatch:
        """The oldest unacked records (at least one if any, then up to the limits).

        Reading does not move the cursor: the same records come back until :meth:`ack`.
        Damaged regions are skipped and reported in the batch (counted when acked).
        """
        with self._lock:
            batch = SpoolBatch([], self._cursor)
            taken = 0
            for segment in list(self._segments):
                if segment.seq < batch.end.segment:
                    continue
                offset = batch.end.offset if segment.seq == batch.end.segment else 0
                if offset >= segment.size:
                    batch.end = Position(segment.seq, segment.size)
                    continue
                with open(segment.path, "rb") as reader:
                    reader.seek(offset)
                    offset, taken = self._read_segment(reader, segment, offset, batch, taken, max_records, max_bytes)
                batch.end = Position(segment.seq, offset)
                if len(batch.records) >= max_records or (batch.records and taken >= max_bytes):
                    break
            return batch

    def _read_segment(
        self,
        reader: BinaryIO,
        segment: _Segment,
        offset: int,
        batch: SpoolBatch,
        taken: int,
        max_records: int,
        max_bytes: int,
    ) -> tuple[int, int]:
        while offset < segment.size:
            if len(batch.records) >= max_records or (batch.records and taken >= max_bytes):
                break
            record, length = read_record(reader, segment.size - offset)
            if record is None:
                skipped = self._resync(segment, offset)
                batch.corrupt_records += 1
                batch.corrupt_bytes += skipped
                offset += skipped
                reader.seek(offset)
                continue
            batch.records.append(record)
            offset += length
            taken += length
        return offset, taken

    @staticmethod
    def _resync(segment: _Segment, offset: int) -> int:
        """Bytes from ``offset`` to the next magic after it (or to the segment's end)."""
        with open(segment.path, "rb") as reader:
            reader.seek(offset + 1)
            rest = reader.read(segment.size - offset - 1)
        found = rest.find(MAGIC)
        return (found + 1) if found >= 0 else (segment.size - offset)

    def ack(self, batch: SpoolBatch) -> None:
        """Everything up to ``batch.end`` is delivered: move the cursor, delete spent segments."""
        with self._lock:
            end = batch.end
            if end < self._cursor:
                return
            self.stats.records_acked += len(batch.records)
            self.stats.corrupt_records += batch.corrupt_records
            self.stats.corrupt_bytes += batch.corrupt_bytes
            active = self._segments[-1] if self._writer is not None else None
            keep = []
            for segment in self._segments:
                spent = segment.seq < end.segment or (
                    segment.seq == end.segment and end.offset >= segment.size and segment is not active
                )
                if spent:
                    segment.path.unlink(missing_ok=True)
                else:
                    keep.append(segment)
            self._segments = keep
            if active is not None and len(keep) == 1 and end == Position(active.seq, active.size):
                # Everything is delivered: start the next append on a fresh, empty file.
                self._close_writer()
                active.path.unlink(missing_ok=True)
                self._segments = []
            if self._segments:
                head = self._segments[0]
                self._cursor = Position(head.seq, end.offset if head.seq == end.segment else 0)
            else:
                self._cursor = Position(self._next_seq, 0)
            self._write_cursor()
            self._recount()

    def _write_cursor(self) -> None:
        path = self.directory / CURSOR_FILE
        temp = path.with_suffix(".tmp")
        try:
            with os.fdopen(_private_file(temp, os.O_WRONLY | os.O_TRUNC), "w") as out:
                out.write(f"{self._cursor.segment} {self._cursor.offset}\n")
            os.replace(temp, path)
        except OSError as exc:
            log.warning("cannot write the spool cursor", extra={"error": str(exc)})
