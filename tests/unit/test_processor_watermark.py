"""Per-partition watermarks and the join's pending requests."""

from __future__ import annotations

from collections import namedtuple

from services.processor.join import PendingRequest, PendingRequests
from services.processor.watermark import PartitionWatermark, Watermarks
from shared.events.messages import InferenceRequest

TP = namedtuple("TP", "topic partition")


def test_commit_point_is_the_lowest_unfinished_offset() -> None:
    mark = PartitionWatermark()
    assert mark.commit_point() is None  # nothing read yet: nothing to commit
    for offset in range(10):
        assert mark.see(offset)
    assert mark.commit_point() == 10
    mark.hold(3)
    mark.hold(7)
    assert mark.commit_point() == 3
    mark.release(7)
    assert mark.commit_point() == 3
    mark.release(3)
    assert mark.commit_point() == 10


def test_the_offset_right_after_a_commit_is_protected_too() -> None:
    # faust's check misses exactly this case (an unacked event at the committed offset).
    mark = PartitionWatermark()
    for offset in range(5):
        mark.see(offset)
    mark.committed = 5
    mark.see(5)
    mark.hold(5)
    for offset in range(6, 1000):
        mark.see(offset)
    assert mark.pending_commit() is None  # 5 is already committed and 5 is unfinished
    mark.release(5)
    assert mark.pending_commit() == 1000


def test_an_offset_held_twice_needs_two_releases() -> None:
    mark = PartitionWatermark()
    mark.see(0)
    mark.hold(0)
    mark.hold(0)
    mark.release(0)
    assert mark.commit_point() == 0
    mark.release(0)
    mark.release(0)  # an extra release is harmless
    assert mark.commit_point() == 1


def test_redelivered_offsets_are_recognised() -> None:
    mark = PartitionWatermark()
    assert mark.see(10) and mark.see(11)
    assert not mark.see(10) and not mark.see(11)
    assert mark.see(12)


def test_watermarks_forget_partitions_that_moved_and_report_pending_commits() -> None:
    marks = Watermarks()
    a, b = TP("t", 0), TP("t", 1)
    marks.get(a).see(4)
    old_b = marks.get(b)
    old_b.see(9)
    assert marks.pending_commits() == {a: 5, b: 10}
    marks.mark_committed({a: 5})
    assert marks.pending_commits() == {b: 10}
    assert marks.keep_only([a]) == [b]
    assert not marks.owns(b, old_b)
    assert marks.get(b) is not old_b  # a new ownership starts from scratch


def _pending(tp: TP, offset: int) -> PendingRequest:
    return PendingRequest(InferenceRequest(), tp, offset, PartitionWatermark())


def test_pending_requests_expire_oldest_first() -> None:
    now = [0.0]
    pending = PendingRequests(ttl_seconds=10, clock=lambda: now[0])
    pending.add("r1", _pending(TP("t", 0), 1))
    now[0] = 5
    pending.add("r2", _pending(TP("t", 0), 2))
    now[0] = 10
    assert [p.offset for p in pending.expired()] == [1]
    assert pending.take("r1") is None
    now[0] = 20
    assert [p.offset for p in pending.expired()] == [2]
    assert len(pending) == 0


def test_pending_requests_of_moved_partitions_are_dropped() -> None:
    pending = PendingRequests(ttl_seconds=10)
    pending.add("r1", _pending(TP("t", 0), 1))
    pending.add("r2", _pending(TP("t", 1), 1))
    assert [p.tp for p in pending.drop_partitions({TP("t", 1)})] == [TP("t", 1)]
    assert pending.take("r1") is not None and pending.take("r2") is None


def test_a_repeated_request_replaces_the_earlier_copy() -> None:
    pending = PendingRequests(ttl_seconds=10)
    first = _pending(TP("t", 0), 1)
    assert pending.add("r1", first) is None
    assert pending.add("r1", _pending(TP("t", 0), 2)) is first
    assert pending.take("r1").offset == 2
