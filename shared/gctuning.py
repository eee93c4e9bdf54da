"""Garbage-collector settings for the services' hot loops.

The services allocate many short-lived containers per event (decoded rows, dicts, tuples) and
almost never make reference cycles. With CPython's default thresholds (700, 10, 10) a young
collection runs every 700 net allocations, and objects still alive then (a batch's rows wait for
their write) are promoted and counted towards full collections, each of which walks every object
the process holds, imports included. Measured on the aggregator's decode (bench and
docs/aggregator.md, "Performance"): about a tenth of its CPU per event; in the gateway, full
collections of the ~120,000 objects start-up makes paused every request in flight for ~80 ms
(docs/gateway.md, "Overhead"). Called by the aggregator, the gateway and the processor once
started.

So, once a service has started: the objects alive then (modules, settings, compiled regexes)
are moved out of the collector's sight with ``gc.freeze()``, and young collections run every
50,000 allocations instead. Reference cycles are still collected, only later; the services'
memory bounds are asserted in the fault tests.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_for_throughput() -> None:
    """Freeze what is alive now and collect less often (see the module docstring)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, max(older, 20), max(oldest, 100))
