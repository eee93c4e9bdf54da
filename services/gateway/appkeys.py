"""Typed keys of the gateway's aiohttp application and requests, in one place for every module.

Request keys are aiohttp's typed ``RequestKey`` where it has them (3.14+), else namespaced
strings, since the project still supports aiohttp 3.10.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.trace import Span, Tracer, TracerProvider

from services.gateway.events import EventPublisher
from services.gateway.ratelimit import RateLimiter
from services.gateway.registry import Deployments
from services.gateway.routes.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings
from shared.plausibility import Plausibility
from shared.telemetry import LoopKafkaSpanExporter

SETTINGS = web.AppKey("settings", GatewaySettings)
DEPLOYMENTS = web.AppKey("deployments", Deployments)
PUBLISHER = web.AppKey("publisher", EventPublisher)
TRACER = web.AppKey("tracer", Tracer)
TRACER_PROVIDER = web.AppKey("tracer_provider", TracerProvider)
METRICS = web.AppKey("metrics", GatewayMetrics)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
PLAUSIBILITY = web.AppKey("plausibility", Plausibility)
# Set when the gateway exports its own spans to Kafka (not with a provider given by a test).
SPAN_EXPORTER = web.AppKey("span_exporter", LoopKafkaSpanExporter)
# The one client session for every LLM call: proxy deployments' upstreams (routes/proxy/relay.py)
# and flows' llm nodes (shared/flow/llm_http.py).
LLM_SESSION = web.AppKey("llm_session", aiohttp.ClientSession)


def _request_key(name: str, kind: type) -> Any:
    factory = getattr(web, "RequestKey", None)
    return factory(name, kind) if factory is not None else f"promptpulse.{name}"


# Per request: the gateway's request id (sent back as x-request-id) and the server span.
REQUEST_ID = _request_key("request_id", str)
SERVER_SPAN = _request_key("server_span", Span)
