"""The few facts every event must hold, checked on encode and on decode.

Deliberately short: only what a consumer cannot work without (identity for deduplication and
keys, the request context storage partitions by, an outcome). Anything added to the schema later
must be optional here, because old events on the log lack it. Whether its numbers are believable
(a score on its evaluator's scale, a latency, token counts) is shared/plausibility.py's question:
the scale depends on the evaluator, which the codec does not know.
"""

from __future__ import annotations

from shared.events.errors import InvalidEventError
from shared.events.messages import Alert, Evaluation, Event, EventMeta, Feedback


def validate(event: Event) -> None:
    """Raise InvalidEventError naming the first broken rule; return None if the event is valid."""
    if isinstance(event, Alert):
        _require_identity(event.event_id, event.HasField("event_time"), "alert")
        if not event.monitor_id:
            raise InvalidEventError("alert has no monitor_id")
        if not event.deployment:
            raise InvalidEventError("alert has no deployment")
        return
    kind = type(event).__name__
    if not event.HasField("meta"):
        raise InvalidEventError(f"{kind} has no meta")
    _require_meta(event.meta, kind, needs_start_time=not isinstance(event, Feedback))
    if isinstance(event, Evaluation):
        _require_outcome(event)


def _require_identity(event_id: str, has_time: bool, kind: str) -> None:
    if not event_id:
        raise InvalidEventError(f"{kind} has no event_id")
    if not has_time:
        raise InvalidEventError(f"{kind} has no event_time")


def _require_meta(meta: EventMeta, kind: str, *, needs_start_time: bool) -> None:
    _require_identity(meta.event_id, meta.HasField("event_time"), kind)
    if not meta.request_id:
        raise InvalidEventError(f"{kind} has no request_id")
    if not meta.deployment:
        raise InvalidEventError(f"{kind} has no deployment")
    if needs_start_time and not meta.HasField("request_start_time"):
        raise InvalidEventError(f"{kind} has no request_start_time")


def _require_outcome(evaluation: Evaluation) -> None:
    if not evaluation.metric:
        raise InvalidEventError("Evaluation has no metric")
    outcome = evaluation.WhichOneof("outcome")
    if outcome is None:
        raise InvalidEventError("Evaluation has no outcome (scored, not_applicable or error)")
