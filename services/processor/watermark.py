"""Per-partition watermarks: the lowest offset whose work is not finished is what may be committed.

Why our own and not faust's acks: faust commits the highest offset below which every event was
*acked*, but its check lets the offset right after the last commit be skipped when it is still
unacked, and with no commit yet (a new group) it checks nothing at all, so an event still being
judged can end up below the committed offset (faust-streaming #606; docs/processor.md shows the
measurement). Here nothing is acked to faust (the topic is consumed with ``acks=False``) and the
processor commits itself: an unsampled event is finished the moment it is seen; a sampled request
stays open until its response has been judged and every outcome is acknowledged by the broker (or
until it expires); a dead-lettered event until the dead letter is acknowledged.

After a crash the next owner re-reads from the committed offset, so every unfinished event is
read again: work is done at least once, never lost.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from faust.types import TP


class PartitionWatermark:
    """Offsets of one partition read by this worker during one ownership of it."""

    __slots__ = ("next_offset", "committed", "seen", "_open", "_heap")

    def __init__(self) -> None:
        # One past the highest offset handled; None until the first event arrives.
        self.next_offset: int | None = None
        # The last offset this worker committed for the partition (None: none yet).
        self.committed: int | None = None
        # Events delivered to the intake, re-deliveries included: the stall detector's sign of
        # life while a re-seek re-reads events handled before (next_offset stands still then).
        self.seen = 0
        self._open: dict[int, int] = {}  # offset -> holds (an offset can be held twice)
        self._heap: list[int] = []

    def see(self, offset: int) -> bool:
        """Record that ``offset`` is being handled; False if it was handled already.

        A rebalance that leaves a partition with us still seeks it back to the committed
        offset, so events after it come again; they are done or in progress, never new.
        """
        self.seen += 1
        if self.next_offset is not None and offset < self.next_offset:
            return False
        self.next_offset = offset + 1
        return True

    def hold(self, offset: int) -> None:
        """Keep the committed offset at or below ``offset`` until :meth:`release`."""
        count = self._open.get(offset)
        if count is None:
            self._open[offset] = 1
            heapq.heappush(self._heap, offset)
        else:
            self._open[offset] = count + 1

    def release(self, offset: int) -> None:
        count = self._open.get(offset)
        if count is None:
            return
        if count > 1:
            self._open[offset] = count - 1
        else:
            del self._open[offset]

    @property
    def open_count(self) -> int:
        return len(self._open)

    def lowest_open(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self._open:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def commit_point(self) -> int | None:
        """The offset to commit: the lowest unfinished one, else one past the last handled."""
        lowest = self.lowest_open()
        return lowest if lowest is not None else self.next_offset

    def pending_commit(self) -> int | None:
        """:meth:`commit_point` if it is ahead of what was committed, else None."""
        point = self.commit_point()
        if point is None or (self.committed is not None and point <= self.committed):
            return None
        return point


class Watermarks:
    """The watermarks of every partition this worker owns, keyed by faust's TP."""

    def __init__(self) -> None:
        self._marks: dict[TP, PartitionWatermark] = {}

    def get(self, tp: TP) -> PartitionWatermark:
        mark = self._marks.get(tp)
        if mark is None:
            mark = self._marks[tp] = PartitionWatermark()
        return mark

    def find(self, tp: TP) -> PartitionWatermark | None:
        return self._marks.get(tp)

    def owns(self, tp: TP, mark: PartitionWatermark) -> bool:
        """Whether ``mark`` is still the live watermark of ``tp`` (not one from an earlier ownership)."""
        return self._marks.get(tp) is mark

    def keep_only(self, assigned: Iterable[TP]) -> list[TP]:
        """Forget partitions no longer assigned (their new owner re-reads them); return those."""
        keep = set(assigned)
        gone = [tp for tp in self._marks if tp not in keep]
        for tp in gone:
            del self._marks[tp]
        return gone

    def items(self) -> Iterator[tuple[TP, PartitionWatermark]]:
        return iter(list(self._marks.items()))

    def pending_commits(self) -> dict[TP, int]:
        found = {}
        for tp, mark in self._marks.items():
            point = mark.pending_commit()
            if point is not None:
                found[tp] = point
        return found

    def mark_committed(self, offsets: dict[TP, int]) -> None:
        for tp, offset in offsets.items():
            mark = self._marks.get(tp)
            if mark is not None and (mark.committed is None or offset > mark.committed):
                mark.committed = offset

    def lowest_open(self) -> dict[TP, int]:
        found = {}
        for tp, mark in self._marks.items():
            lowest = mark.lowest_open()
            if lowest is not None:
                found[tp] = lowest
        return found
