"""The events of one accepted request: request, token chunks, response.

All share one :class:`EventMeta` (request id, deployment, variant, run id, start time, the
server span's trace context), each with its own event id. The request event is published
before the flow runs; the response event always follows, whatever the outcome (ok, error,
cancelled), so a consumer never waits for a response that will not come. Named fields are
redacted first (services/gateway/redaction.py).

Numbers are checked with the aggregator's own checks (shared/plausibility.py) before publishing:
an LLM call whose reported usage is implausible (an endpoint answering 1e12 tokens) is left out
of the event and of the token counters, and the event's error message says so, so the rest of
the response is still recorded; anything else implausible is logged and counted, and published
as it is for the aggregator to dead-letter with its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from services.gateway.events import (
    EventPublisher,
    EventTooLarge,
    PublisherError,
    Reservation,
    TokenCoalescer,
)
from services.gateway.events.settings import PublisherSection
from services.gateway.redaction import redact_fields
from services.gateway.routes.metrics import GatewayMetrics
from services.gateway.runtime import Runtime
from shared.events.builders import dict_to_struct, new_meta, next_meta
from shared.events.errors import InvalidEventError
from shared.events.messages import InferenceRequest, InferenceResponse, InferenceStatus, LlmUsage
from shared.flow import LlmCall
from shared.plausibility import Implausible, Plausibility

log = logging.getLogger(__name__)

Outcome = Literal["ok", "error", "cancelled"]
_STATUS = {
    "ok": InferenceStatus.INFERENCE_STATUS_OK,
    "error": InferenceStatus.INFERENCE_STATUS_ERROR,
    "cancelled": InferenceStatus.INFERENCE_STATUS_CANCELLED,
}


def usage_records(calls: Iterable[LlmCall]) -> list[dict[str, Any]]:
    """Usage per LLM call as the client sees it in the reply."""
    return [
        {"node": c.node, "model": c.model, "prompt_tokens": c.prompt_tokens,
         "completion_tokens": c.completion_tokens, "total_tokens": c.total_tokens}
        for c in calls
    ]


class InferenceRecorder:
    """Builds and publishes one request's events; the handler calls it at each step."""

    def __init__(
        self,
        publisher: EventPublisher,
        runtime: Runtime,
        metrics: GatewayMetrics,
        section: PublisherSection,
        *,
        request_id: str,
        start_time: datetime,
        started: float,
        variant: str,
        run_id: str,
        traceparent: str,
        plausibility: Plausibility | None = None,
    ) -> None:
        self.publisher = publisher
        self.plausibility = plausibility if plausibility is not None else Plausibility()
        self.runtime = runtime
        self.metrics = metrics
        self.section = section
        self.started = started
        self.meta = new_meta(
            request_id=request_id, deployment=runtime.name, request_start_time=start_time,
            variant=variant, run_id=run_id, traceparent=traceparent,
        )
        self.reservation: Reservation | None = None
        self._coalescer: TokenCoalescer | None = None
        self._output = ""
        self._redact_chunks = False
        self.responded = False

    def request_event(self, inputs: Mapping[str, Any], *, client_request_id: str, streaming: bool) -> InferenceRequest:
        """Raises InvalidEventError when the inputs cannot be recorded (e.g. an integer > 2**53)."""
        return InferenceRequest(
            meta=self.meta,
            inputs=dict_to_struct(redact_fields(inputs, self.runtime.redacted_inputs)),
            client_request_id=client_request_id,
            streaming=streaming,
        )

    def publish_request(self, event: InferenceRequest, reservation: Reservation) -> None:
        """Raises EventTooLarge or PublisherClosed (nothing published then)."""
        self.reservation = reservation
        self.publisher.publish(event, reservation=reservation)

    # ---- token chunks

    def start_stream(self, output: str | None) -> None:
        section = self.section
        self._output = output or ""
        self._redact_chunks = output in self.runtime.redacted_outputs
        self._coalescer = TokenCoalescer(
            max_tokens=section.coalesce_max_tokens, max_interval=section.coalesce_interval_ms / 1000
        )

    def on_delta(self, text: str) -> None:
        # One delta is one token for OpenAI-style streams (llmsim sends one per token too).
        if self._coalescer is not None:
            self._publish_chunk(self._coalescer.add(text, 1))

    def end_stream(self) -> None:
        if self._coalescer is not None:
            self._publish_chunk(self._coalescer.flush())

    def _publish_chunk(self, chunk: Any) -> None:
        if chunk is None:
            return
        event = chunk.to_event(self.meta, self._output)
        if self._redact_chunks:
            event.text = ""
        try:
            self.publisher.publish(event)  # a chunk with no room is dropped and counted, never raised
        except PublisherError as exc:
            log.warning("token chunk not published", extra={"request_id": self.meta.request_id, "error": str(exc)})

    # ---- response

    def respond(
        self,
        status: Outcome,
        *,
        llm_calls: Iterable[LlmCall] = (),
        outputs: Mapping[str, Any] | None = None,
        error_type: str = "",
        error_message: str = "",
        time_to_first_token_ms: float | None = None,
    ) -> None:
        """Publish the response event (once) and count the run; never raises."""
        if self.responded:
            return
        self.responded = True
        calls, left_out = self._plausible_calls(llm_calls)
        if left_out:
            error_message = "; ".join(filter(None, (error_message, left_out)))
        latency_ms = (time.perf_counter() - self.started) * 1000
        event = InferenceResponse(
            meta=next_meta(self.meta), status=_STATUS[status], error_type=error_type,
            error_message=error_message, latency_ms=latency_ms, usage=[usage for _, usage in calls],
        )
        if time_to_first_token_ms is not None:
            event.time_to_first_token_ms = time_to_first_token_ms
        if outputs is not None:
            try:
                event.outputs.CopyFrom(dict_to_struct(redact_fields(outputs, self.runtime.redacted_outputs)))
            except InvalidEventError as exc:
                # The client got its answer; the event keeps the outcome without the outputs.
                event.error_message = "; ".join(filter(None, (f"outputs not recorded: {exc}", left_out)))
        try:
            self.plausibility.check(event)
        except Implausible as exc:  # e.g. a clock jump: the aggregator keeps it as a dead letter
            self.metrics.implausible_values[self.runtime.name] += 1
            log.warning("response event holds an implausible value",
                        extra={"request_id": self.meta.request_id, "error": str(exc)})
        self._publish_response(event)
        self._count(status, [call for call, _ in calls], latency_ms, time_to_first_token_ms)

    def _plausible_calls(self, llm_calls: Iterable[LlmCall]) -> tuple[list[tuple[LlmCall, LlmUsage]], str]:
        """The calls whose usage is plausible, each with its event entry, and a note naming the
        others (empty when there are none)."""
        kept: list[tuple[LlmCall, LlmUsage]] = []
        notes: list[str] = []
        for index, call in enumerate(llm_calls):
            try:
                usage = LlmUsage(node=call.node, model=call.model, prompt_tokens=call.prompt_tokens,
                                 completion_tokens=call.completion_tokens, total_tokens=call.total_tokens)
                self.plausibility.check_usage(usage)
            except (Implausible, ValueError) as exc:  # ValueError: beyond what an int64 holds
                notes.append(f"usage of LLM call {index + 1} ({call.node}) not recorded: {exc}")
                continue
            kept.append((call, usage))
        if notes:
            self.metrics.implausible_values[self.runtime.name] += len(notes)
            log.warning("LLM usage not recorded: implausible",
                        extra={"request_id": self.meta.request_id, "error": "; ".join(notes)})
        return kept, "; ".join(notes)

    def _publish_response(self, event: InferenceResponse) -> None:
        try:
            try:
                self.publisher.publish(event, reservation=self.reservation)
            except EventTooLarge as exc:
                event.ClearField("outputs")
                event.error_message = f"outputs not recorded: {exc}"
                self.publisher.publish(event, reservation=self.reservation)
        except PublisherError as exc:
            # Only when the publisher is closed under us (shutdown past its timeout): say so loudly.
            log.error("response event not published",
                      extra={"request_id": self.meta.request_id, "error": str(exc)})
        finally:
            if self.reservation is not None:
                self.reservation.release()

    def _count(self, status: Outcome, calls: list[LlmCall], latency_ms: float, ttft_ms: float | None) -> None:
        metrics = self.metrics
        name = self.runtime.name
        metrics.flow_runs[(name, self.meta.variant, status)] += 1
        metrics.observe_run(name, latency_ms / 1000)
        if ttft_ms is not None:
            metrics.observe_ttft(name, ttft_ms / 1000)
        for call in calls:
            metrics.tokens[(name, call.model, "prompt")] += call.prompt_tokens
            metrics.tokens[(name, call.model, "completion")] += call.completion_tokens
