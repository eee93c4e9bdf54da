"""W3C trace flags of an incoming ``traceparent``: the sampled flag is bit 0 alone. Flags 02 (the
Level 2 random-trace-id bit only) are not sampled and 03 are, so a gateway that follows its
caller's decision (parentbased samplers) records the server span for 01, 03, ff, and not for 00
or 02 (docs/proxy.md, "Throughput and tracing")."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

from services.gateway.tracing import incoming_context, trace_header

TRACE_ID, SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(("flags", "sampled"), [("00", False), ("01", True), ("02", False), ("03", True),
                                                ("ff", True)])
def test_the_caller_s_sampled_bit_decides_whatever_the_other_flags(flags: str, sampled: bool) -> None:
    request = make_mocked_request("POST", "/v1/chat/completions",
                                  headers={"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-{flags}"})
    tracer = TracerProvider(sampler=ParentBased(ALWAYS_ON)).get_tracer("services.gateway")
    with tracer.start_as_current_span("POST /v1/chat/completions", context=incoming_context(request)) as span:
        assert span.is_recording() is sampled
        header = trace_header(span)
        assert header is not None and header.startswith(f"00-{TRACE_ID}-")
        assert bool(int(header.rsplit("-", 1)[1], 16) & 1) is sampled  # what the caller reads back
