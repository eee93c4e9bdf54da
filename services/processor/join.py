"""Sampled requests waiting for their response.

Request and response of one request arrive in order on one partition (both are keyed by the
request id), so the join is a dictionary: the request event is stored, the response event takes
it out and triggers judging. Only sampled requests are stored. A request whose response never
comes (the gateway died mid-flow) expires after ``request_ttl_seconds`` and is counted; it holds
its partition's committed offset until then, so a crash re-reads it rather than losing it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from faust.types import TP

from services.processor.watermark import PartitionWatermark
from shared.events.messages import InferenceRequest


@dataclass(slots=True)
class PendingRequest:
    request: InferenceRequest
    tp: TP
    offset: int
    watermark: PartitionWatermark
    expires_at: float = field(default=0.0)


class PendingRequests:
    """Sampled requests by request id, oldest first (so expiry pops from the front)."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._items: OrderedDict[str, PendingRequest] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, request_id: str, pending: PendingRequest) -> PendingRequest | None:
        """Store ``pending``; returns a request it replaced (the same request id seen twice)."""
        pending.expires_at = self._clock() + self._ttl
        previous = self._items.pop(request_id, None)
        self._items[request_id] = pending
        return previous

    def take(self, request_id: str) -> PendingRequest | None:
        return self._items.pop(request_id, None)

    def expired(self) -> list[PendingRequest]:
        """Remove and return the requests whose time is up."""
        now = self._clock()
        gone = []
        items = self._items
        while items:
            request_id, oldest = next(iter(items.items()))
            if oldest.expires_at > now:
                break
            del items[request_id]
            gone.append(oldest)
        return gone

    def drop_partitions(self, tps: set[TP]) -> list[PendingRequest]:
        """Forget the requests of partitions that moved to another worker (it re-reads them)."""
        if not tps:
            return []
        dropped = [p for p in self._items.values() if p.tp in tps]
        for request_id in [rid for rid, p in self._items.items() if p.tp in tps]:
            del self._items[request_id]
        return dropped
