"""``GET /openapi.json``: an OpenAPI 3.1 description of the aggregator's query API.

Parameters carry the patterns and bounds the handlers check (services/aggregator/api/params.py),
so a client (or tests/integration/test_api_sweep.py, which generates requests from this
document) can tell a valid request from one that gets a 400. A stream's ``schema`` describes
one server-sent event.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.aggregator.api.errors import json_response
from services.aggregator.api.params import DESTINATION_PATTERN, RUN_ID_PATTERN
from services.aggregator.api.settings import ApiSection
from services.aggregator.api.state import API
from services.aggregator.appkeys import QUERY_API
from services.aggregator.ingest.values import MAX_ID_CHARS
from services.aggregator.monitors import silences
from shared.deployments.base import MONITOR_ID_PATTERN, NAME_PATTERN, VARIANT_ID_PATTERN
from shared.deployments.destinations import DESTINATION_NAME_PATTERN


def _param(name: str, where: str, description: str, schema: dict[str, Any] | None = None,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": schema or {"type": "string"}}


_TIME = {"type": "string", "description": "RFC 3339 with a zone, or Unix seconds; from 2000 to 2200.",
         "anyOf": [{"format": "date-time"}, {"pattern": r"^\d{1,12}(\.\d{1,9})?$"}]}
_NAME = {"type": "string", "pattern": NAME_PATTERN}
_VARIANT_ID = {"type": "string", "pattern": VARIANT_ID_PATTERN}
_DEPLOYMENT = _param("deployment", "path", "Deployment name.", _NAME)
_FROM = _param("from", "query", "Start of the range (floored to the minute).", _TIME)
_TO = _param("to", "query", "End of the range, exclusive (ceiled to the minute); default now.", _TIME)
_CURSOR = _param("cursor", "query", "next_cursor of the previous page.",
                 {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,1000}$"})  # URL-safe base64
_VARIANT = _param("variant", "query", "Only this variant.", _VARIANT_ID)
_STEP = {"type": "string", "pattern": r"^\d{1,9}[smhd]?$",
         "description": "A whole number of minutes, at least 1m: 1m, 5m, 1h, 1d, or seconds (300)."}
# One server-sent event (services/aggregator/api/stream_route.py); data is JSON.
_SSE_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"enum": ["snapshot", "metrics"]}, "id": {"type": "string"},
    "data": {"type": "string", "contentMediaType": "application/json"}}}
_RUN_ID = {"type": "string", "pattern": RUN_ID_PATTERN}
_MONITOR_ID = {"type": "string", "pattern": MONITOR_ID_PATTERN}
_MONITOR_PATH = _param("monitor_id", "path", "Monitor id.", _MONITOR_ID)
_ONE_LINE = silences.ONE_LINE
_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": "A bad parameter; error.field names it.",
    "401": "No valid read key (Authorization: Bearer) or session cookie.",
    "403": "The route needs the admin key.",
    "404": "Unknown deployment, trace, run or destination.",
    "503": "No read key configured, or the database is unavailable.",
}


def _limit(max_page_size: int) -> dict[str, Any]:
    return _param("limit", "query", "Page size.", {"type": "integer", "minimum": 1, "maximum": max_page_size})


def _operation(summary: str, params: list[dict[str, Any]], ok: str, *, admin: bool = False,
               body: dict[str, Any] | None = None, content: str = "application/json",
               ok_status: str = "200", example: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = _SSE_EVENT if content == "text/event-stream" else {"type": "string"} if content == "text/plain" \
        else {"type": "object"}
    responses: dict[str, Any] = {ok_status: {"description": ok, "content": {content: {"schema": schema}}}}
    errors = _ERRORS | ({"413": "The body is over the size limit."} if body is not None else {})
    for status, text in errors.items():
        responses[status] = {"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
    operation: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses,
                                 "security": [{"adminKey": []}] if admin else [{"readKey": []}, {"session": []}]}
    if body is not None:
        media: dict[str, Any] = {"schema": body} | ({"example": example} if example is not None else {})
        operation["requestBody"] = {"required": True, "content": {"application/json": media}}
    return operation


def document(max_page_size: int = ApiSection().max_page_size) -> dict[str, Any]:
    limit = _limit(max_page_size)
    monitors_body = {"type": "object", "required": ["monitors"], "properties": {"monitors": {
        "type": "array", "description": "The deployment's monitors, as in a deployment file (docs/deployments.md).",
        "items": {"type": "object"}}}}
    silence_body = {"type": "object", "required": ["duration", "reason", "created_by"],
                    "additionalProperties": False, "properties": {
        "duration": {"type": "string", "pattern": r"^\s*\d{1,9}\s*[smhd]\s*$",
                     "description": "How long, from now: 30m, 2h, 1d (at least 1m, at most 30d)."},
        "reason": {"type": "string", "minLength": 1, "maxLength": silences.MAX_REASON_CHARS, "pattern": _ONE_LINE},
        "created_by": {"type": "string", "minLength": 1, "maxLength": silences.MAX_NAME_CHARS,
                       "pattern": _ONE_LINE,
                       "description": "Who sets it, as recorded and listed (the admin key names no one)."}}}
    rejudge_body = {"type": "object", "required": ["evaluator", "from", "to"], "additionalProperties": False,
                    "properties": {
                        "evaluator": {"type": "string", "description": "NAME or NAME@VERSION (the current one)."},
                        "from": _TIME, "to": _TIME,
                        "sample": {"type": "integer", "minimum": 1, "maximum": 1_000_000,
                                   "description": "Judge at most this many requests, chosen by request id."}}}
    paths = {
        "/v1/session": {"post": {
            "summary": "Exchange the read key (bearer, or {\"key\": ...}) for an HttpOnly session cookie.",
            "security": [{"readKey": []}, {"adminKey": []}, {}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"key": {"type": "string", "description": "The read key."}}}}}},
            "responses": {"200": {"description": "Cookie set.", "content": {"application/json": {"schema": {
                "type": "object", "required": ["expires_at", "role"]}}}}} | {
                status: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
                for status, text in (("400", "The body is not JSON."), ("401", "Wrong key."),
                                     ("413", "The body is over the size limit."),
                                     ("503", "No read key configured."))}},
            "delete": {"summary": "End the cookie's session on every replica (a copy of the cookie stops "
                                  "working too) and clear the cookie.", "security": [],
                       "responses": {"204": {"description": "Ended and cleared."}}}},
        "/v1/deployments": {"get": _operation("Deployments configured or seen, with their variants.", [],
                                              "Deployments.")},
        "/v1/deployments/{deployment}/metrics": {"get": _operation(
            "Overview and time series of a deployment over a range.",
            [_DEPLOYMENT, _FROM, _TO,
             _param("step", "query", "Series step: 1m, 5m, 1h, 1d (whole minutes).", _STEP), _VARIANT,
             _param("pass_score", "query", "A score passes when >= this (default 3).",
                    {"type": "integer", "minimum": 1, "maximum": 5})],
            "Overview, per-variant figures and per-step series.")},
        "/v1/deployments/{deployment}/requests": {"get": _operation(
            "Requests newest first, with inputs, outputs, scores, reasons and trace ids.",
            [_DEPLOYMENT, _param("sampled", "query", "Only requests whose payloads were kept (default true).",
                                 {"type": "boolean"}),
             limit, _CURSOR, _VARIANT, _param("run_id", "query", "A batch run's requests.", _RUN_ID), _FROM, _TO],
            "A page of requests and next_cursor.")},
        "/v1/deployments/{deployment}/compare": {"get": _operation(
            "Two variants over one range: each one's figures, and per quality metric the difference of "
            "average scores (Welch t interval) and of pass rates (Newcombe interval), with a verdict.",
            [_DEPLOYMENT,
             _param("baseline", "query", "The variant compared against.", _VARIANT_ID, required=True),
             _param("candidate", "query", "The variant compared (must differ from baseline).", _VARIANT_ID,
                    required=True),
             _FROM, _TO,
             _param("pass_score", "query", "A score at or above this passes (default 3).",
                    {"type": "integer", "minimum": 1, "maximum": 5})],
            "Both variants' figures and the differences.")},
        "/v1/deployments/{deployment}/agreement": {"get": _operation(
            "Each judge's agreement with people, per metric and evaluator version: quadratic weighted kappa, "
            "exact-match rate and the mean difference (judge minus person) with its t interval, over requests "
            "that have both a human label (feedback labels) and a judge score. Default range: the last 7 days.",
            [_DEPLOYMENT, _FROM, _TO,
             _param("metric", "query", "Only this metric.", {"type": "string", "minLength": 1, "maxLength": 200}),
             _param("min_labels", "query", "Fewest labelled requests to report figures (default 10).",
                    {"type": "integer", "minimum": 2, "maximum": 100000})],
            "Agreement per metric and evaluator version.")},
        "/v1/deployments/{deployment}/violations": {"get": _operation(
            "Violated monitor windows ending in (from, to], newest first, and counts per monitor and metric.",
            [_DEPLOYMENT, _FROM, _TO, _VARIANT,
             _param("limit", "query", "Most windows returned (default 1000).",
                    {"type": "integer", "minimum": 1, "maximum": 5000})],
            "Violated windows, and violation counts per monitor and per metric.")},
        # Before the monitors: a generated PUT may empty the monitor set the silences need.
        "/v1/deployments/{deployment}/silences": {"get": _operation(
            "Silences of the deployment's monitors, newest first, each active, expired or ended (early).",
            [_DEPLOYMENT, _param("monitor", "query", "Only this monitor's.", _MONITOR_ID),
             _param("state", "query", "Only silences in this state.", {"type": "string", "enum": list(silences.STATES)}),
             limit], "Silences.")},
        "/v1/deployments/{deployment}/monitors/{monitor_id}/silences": {
            "post": _operation(
                "Silence the monitor's direct destinations (Slack, Teams, PagerDuty, webhooks) from now on: its "
                "transitions still reach the alerts topic (marked silenced) and Alertmanager.",
                [_DEPLOYMENT, _MONITOR_PATH], "The silence.", admin=True, body=silence_body, ok_status="201",
                example={"duration": "2h", "reason": "known issue, being fixed", "created_by": "alice"}),
            "delete": _operation(
                "End the monitor's silences in force now (their records stay, marked ended).",
                [_DEPLOYMENT, _MONITOR_PATH,
                 _param("by", "query", "Who ends them (recorded).",
                        {"type": "string", "minLength": 1, "maxLength": silences.MAX_NAME_CHARS,
                         "pattern": _ONE_LINE})],
                "The silences ended (empty when none was in force).", admin=True)},
        "/v1/deployments/{deployment}/monitors": {
            "get": _operation("The monitors in force, with their state and last window.", [_DEPLOYMENT],
                              "Monitors."),
            "put": _operation("Replace the deployment's monitors (they then win over the file).", [_DEPLOYMENT],
                              "The monitors now in force.", admin=True, body=monitors_body)},
        "/v1/requests/{request_id}": {"get": _operation(
            "One request by id (the gateway's x-request-id), in any deployment: inputs and outputs "
            "where kept, answer status, latency, tokens, scores, reasons, feedback and trace id.",
            [_param("request_id", "path", "The request id.",
                    {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS})],
            "The request.")},
        "/v1/traces/{trace_id}": {"get": _operation(
            "A trace as a tree of spans.",
            [_param("trace_id", "path", "32 hex characters.", {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"})],
            "The trace.")},
        "/v1/alerts": {"get": _operation(
            "Alert state changes, newest first, and the monitors firing now.",
            [_param("deployment", "query", "Only this deployment.", _NAME),
             _param("monitor", "query", "Only this monitor.", {"type": "string", "pattern": MONITOR_ID_PATTERN}),
             _param("state", "query", "firing or resolved.", {"type": "string", "enum": ["firing", "resolved"]}),
             limit, _CURSOR], "Alerts.")},
        "/v1/destinations": {"get": _operation(
            "The direct alert destinations the deployment files configure: kind, the names of the "
            "environment variables holding their URL, routing key or secret, and whether this aggregator "
            "has them set (never a value).",
            [_param("deployment", "query", "Only this deployment (a configured one).", _NAME)], "Destinations.")},
        "/v1/deliveries": {"get": _operation(
            "The delivery log of direct destinations, newest first: one row per attempt or test notification "
            "(destination, kind, monitor, alert, attempt, outcome, HTTP status, error).",
            [_param("deployment", "query", "Only this deployment.", _NAME),
             _param("destination", "query", "Only this destination.",
                    {"type": "string", "pattern": DESTINATION_PATTERN}),
             _param("monitor", "query", "Only this monitor.", {"type": "string", "pattern": MONITOR_ID_PATTERN}),
             limit, _CURSOR], "Deliveries and next_cursor.")},
        "/v1/deployments/{deployment}/destinations/{destination}/test": {"post": _operation(
            "Send a test notification to one destination now, from the aggregator (whose environment holds "
            "the credentials), through the same code as alerts; one attempt, logged. PagerDuty gets a "
            "trigger and its resolve. 200 whatever the destination answered: see delivered.",
            [_DEPLOYMENT, _param("destination", "path", "The destination's name.",
                                 {"type": "string", "pattern": DESTINATION_NAME_PATTERN})],
            "What each attempt got.", admin=True)},
        "/v1/deployments/{deployment}/rejudges": {
            "get": _operation("Re-judges of the deployment, newest first, with their progress.", [_DEPLOYMENT, limit],
                              "Re-judges."),
            "post": _operation(
                "Re-judge a past window under an evaluator's current version (docs/evaluation.md): stored, "
                "then sent to the processor as a command. 400 for an evaluator or version the processor has not "
                "loaded, from >= to, to in the future, or from older than the inference topic's retention.",
                [_DEPLOYMENT], "The re-judge, requested.", admin=True, ok_status="202", body=rejudge_body)},
        "/v1/rejudges/{rejudge_id}": {"get": _operation(
            "A re-judge's progress and, once outcomes are stored, old version against new on the same requests: "
            "paired mean difference with its t interval, both pass rates, exact-match rate, Cohen's kappa on "
            "pass/fail, weighted kappa on the scale, and the requests whose score moved most.",
            [_param("rejudge_id", "path", "The re-judge's id.", {"type": "string", "minLength": 1, "maxLength": 64})],
            "The re-judge and its comparison.")},
        "/v1/runs/{run_id}": {"get": _operation(
            "A batch run's progress and per-variant figures.", [_param("run_id", "path", "The run id.", _RUN_ID)],
            "The run.")},
        "/v1/stream/metrics": {"get": _operation(
            "Server-sent events: a snapshot, then the changed minutes after each committed batch.",
            [_param("deployment", "query", "Deployment name.", _NAME, required=True)], "An event stream.",
            content="text/event-stream")},
        "/v1/prometheus/quality": {"get": _operation(
            "Prometheus text: per deployment, variant and metric the newest closed window's average score, "
            "pass rate and samples, and each monitor's state (for a scrape with the read key as bearer).",
            [], "Prometheus text format 0.0.4.", content="text/plain")},
        "/healthz": {"get": {"summary": "The process serves and no partition is stalled (records waiting, "
                                        "nothing taken in for stall_seconds); 503 restarts the pod.",
                             "security": [],
                             "responses": {"200": {"description": "ok"},
                                           "503": {"description": "stalled: stalled_partitions names them"}}}},
        "/readyz": {"get": {"summary": "Ingestion is positioned and Postgres reachable.", "security": [],
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics of this process.", "security": [],
                             "responses": {"200": {"description": "text format 0.0.4"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "PromptPulse aggregator query API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "readKey": {"type": "http", "scheme": "bearer", "description": "PROMPTPULSE_API_READ_KEY"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "PROMPTPULSE_API_ADMIN_KEY"},
                "session": {"type": "apiKey", "in": "cookie", "name": "pp_session"},
            },
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["type", "message"], "properties": {
                    "type": {"type": "string"}, "message": {"type": "string"},
                    "field": {"type": "string", "description": "The parameter or field at fault."},
                    "problems": {"type": "array", "items": {"type": "object"}}}}}}},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    api = request.app.get(QUERY_API)  # a route of the main app; the API's state is in its sub-app
    section = api[API].section if api is not None and API in api else ApiSection()
    return json_response(document(section.max_page_size))
