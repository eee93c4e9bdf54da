"""``GET /openapi.json``: an OpenAPI 3.1 description built from the deployments being served.

Each deployment gets its own score path whose request body is its flow's real input schema
(types, defaults, descriptions, which inputs are required) and whose reply lists its outputs,
so a client generator produces a typed client per deployment. Rebuilt after each reload.

The document says what the handlers check, no more and no less (tests/integration/
test_api_sweep.py generates requests from it and expects a schema-valid one to pass the checks
and an invalid one to be refused): an optional input may be left out (never ``null``),
integers stay within what an event can record exactly (2**53), headers carry their real
patterns. A stream's ``schema`` describes one server-sent event (``event`` and ``data``).
``POST /score`` (prompt flow's client contract) takes any deployment's inputs: the key decides.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.appkeys import DEPLOYMENTS
from services.gateway.registry import DeploymentRuntime, Registry
from services.gateway.routes.common import (
    CLIENT_REQUEST_ID_HEADER,
    CLIENT_REQUEST_ID_PATTERN,
    RUN_HEADER,
    RUN_ID_PATTERN,
    VARIANT_HEADER,
)
from services.gateway.routes.errors import json_response
from services.gateway.routes.variants import node_variant_names
from shared.flow import Flow
from shared.flow.model import MISSING
from shared.upstream import CHAT, COMPLETIONS, EMBEDDINGS, OPERATIONS, RESPONSES

_JSON_TYPES = {"string": "string", "int": "integer", "double": "number", "bool": "boolean", "list": "array",
               "object": "object"}
_ERROR = {"$ref": "#/components/schemas/Error"}
# Events store numbers as doubles (shared/events/builders.py): larger integers are refused (400).
_MAX_EXACT_INTEGER = 2**53
# The handlers' own patterns (routes/common.py), valid as ECMA-262 regexes too.
_RUN_ID = RUN_ID_PATTERN.pattern
_CLIENT_REQUEST_ID = CLIENT_REQUEST_ID_PATTERN.pattern
_ERRORS = {
    "400": "Body not JSON, an input missing or of the wrong type, or a bad header (error.field names it).",
    "401": "Missing or invalid API key.",
    "404": "No such deployment.",
    "413": "Body over the size limit.",
    "429": "The key's rate limit is reached (see Retry-After).",
    "500": "A flow node other than an LLM call failed (error.type node_failed; error.node, error.exception_type and "
           "error.exception_message say which and why), or the gateway itself did (internal_error, no details).",
    "502": "An LLM call failed (error.type says how; error.node, error.exception_type, error.exception_message and, "
           "when the endpoint answered, error.llm_status say which and why).",
    "503": "The gateway cannot record more requests right now (error.type overloaded or shutting_down, see "
           "Retry-After), or the "
           "deployment's files do not load (error.type deployment_unavailable; operators see why on "
           "GET /admin/deployments).",
    "504": "The flow did not finish in time.",
}

# The error object's fields. A failed node's message is "node 'answer': RateLimitError: <message>"
# (secrets redacted), the same text as the trace and the stored response (routes/outcomes.py).
_ERROR_FIELDS: dict[str, Any] = {
    "type": {"type": "string", "description": "Stable, machine-readable kind (invalid_input, node_failed, ...)."},
    "message": {"type": "string", "description": "For people; never holds a secret."},
    "field": {"type": "string", "description": "The input, header or query parameter at fault."},
    "node": {"type": "string", "description": "The flow node that failed (500 node_failed, 502)."},
    "exception_type": {"type": "string", "description": "The node's exception class (KeyError, RateLimitError)."},
    "exception_message": {"type": "string", "description": "The exception's message, secrets redacted."},
    "llm_error": {"type": "string", "description": "Same as exception_type, for LLM failures (older clients)."},
    "llm_status": {"type": "integer", "description": "The LLM endpoint's HTTP status, when it answered."},
}

# One server-sent event of a streamed reply (services/gateway/routes/stream.py); data is JSON.
_SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"enum": ["delta", "done", "error"]},
                   "data": {"type": "string", "contentMediaType": "application/json"}},
}


def input_schema(flow: Flow) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    history = flow.chat_history_input
    for spec in flow.inputs.values():
        kind = _JSON_TYPES.get(spec.type)
        prop: dict[str, Any] = {"type": kind} if kind else {}  # a flex flow's untyped parameter: any value
        if kind == "integer":
            prop |= {"minimum": -_MAX_EXACT_INTEGER, "maximum": _MAX_EXACT_INTEGER}
        if spec.description:
            prop["description"] = spec.description
        if spec.default is not MISSING:
            prop["default"] = spec.default  # when left out; null is refused (shared/flow/inputs.py)
        else:
            required.append(spec.name)
        if history is not None and spec.name == history.name:
            prop["items"] = {"type": "object", "required": ["inputs", "outputs"],
                             "properties": {"inputs": {"type": "object"}, "outputs": {"type": "object"}}}
            prop.setdefault("description", "Earlier turns of the conversation, oldest first.")
        properties[spec.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def output_schema(flow: Flow) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for output in flow.outputs.values():
        kind = _JSON_TYPES.get(output.type or "")
        properties[output.name] = {"type": [kind, "null"]} if kind else {}
    properties["request_id"] = {"type": "string", "format": "uuid", "description": "The gateway's id of this request."}
    properties["variant"] = {"type": "string", "description": "The variant that answered."}
    return {"type": "object", "properties": properties, "required": ["request_id", "variant"]}


def _parameters(runtime: DeploymentRuntime) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": "stream", "in": "query", "schema": {"type": "boolean"},
         "description": "Stream the answer as server-sent events (or send Accept: text/event-stream)."},
        {"name": RUN_HEADER, "in": "header", "schema": {"type": "string", "pattern": _RUN_ID},
         "description": "Batch run id: judged fully, kept out of production figures."},
        {"name": CLIENT_REQUEST_ID_HEADER, "in": "header", "schema": {"type": "string", "pattern": _CLIENT_REQUEST_ID},
         "description": "Your own id, recorded beside the gateway's (which the reply's x-request-id carries)."},
    ]
    if runtime.deployment.allow_forced_variant:
        names = [*runtime.variants, *node_variant_names(runtime)]
        params.append({"name": VARIANT_HEADER, "in": "header", "schema": {"type": "string", "enum": names},
                       "description": "Run this variant instead of one chosen by weight: its id, or a node "
                                      "variant as prompt flow names it (${node.variant_1})."})
    return params


def _score_operation(runtime: DeploymentRuntime) -> dict[str, Any]:
    name = runtime.name
    responses: dict[str, Any] = {
        "200": {
            "description": "The flow's outputs (JSON), or its answer as server-sent events: `delta` events, "
                           "then `done` with outputs and usage (or `error`).",
            "content": {
                "application/json": {"schema": output_schema(runtime.flow)},
                "text/event-stream": {"schema": _SSE_EVENT},
            },
        },
    }
    responses |= {code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
                  for code, text in _ERRORS.items()}
    if runtime.deployment.allow_forced_variant:
        responses["403"] = {"description": "Unused: this deployment lets clients choose the variant."}
    else:
        responses["403"] = {"description": "x-promptpulse-variant sent, but this deployment does not allow it.",
                            "content": {"application/json": {"schema": _ERROR}}}
    return {
        "operationId": f"score_{name.replace('-', '_')}",
        "summary": runtime.deployment.description or f"Run the {name} deployment's flow",
        "tags": [name],
        "parameters": _parameters(runtime),
        "requestBody": {"required": True, "content": {"application/json": {"schema": input_schema(runtime.flow)}}},
        "responses": responses,
    }


# prompt flow's stream (routes/pf_score.py): "message" events of output deltas, or one "error".
_PF_SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"enum": ["message", "error"]},
                   "data": {"type": "string", "contentMediaType": "application/json"}},
}
_PF_ERROR = {"allOf": [_ERROR, {"properties": {"error": {"required": ["code"], "properties": {
    "code": {"enum": ["UserError", "SystemError"], "description": "prompt flow's error category: 4xx / 5xx."}}}}}]}


def _pf_score_operation(registry: Registry) -> dict[str, Any]:
    """``POST /score``: any deployment's flow, the one the key belongs to."""
    runtimes = [registry.deployments[name] for name in sorted(registry.deployments)]
    inputs = [input_schema(rt.flow) for rt in runtimes]
    outputs = [{k: v for k, v in output_schema(rt.flow).items() if k != "required"} for rt in runtimes]
    for schema in outputs:
        schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in ("request_id", "variant")}
    # Which names are valid depends on the key's deployment: listed here, those of any deployment.
    forced = sorted({name for rt in runtimes if rt.deployment.allow_forced_variant
                     for name in [*rt.variants, *node_variant_names(rt)]})
    variant: dict[str, Any] = {"type": "string", "description": "Run this variant of the key's deployment (its "
                               "id, or a node variant as prompt flow names it: ${node.variant_1}); only where "
                               "allow_forced_variant."}
    if forced:
        variant["enum"] = forced
    params: list[dict[str, Any]] = [
        {"name": "azureml-model-deployment", "in": "header", "schema": variant,
         "description": "As on an Azure ML endpoint, where it names one deployment: here one variant."},
        {"name": VARIANT_HEADER, "in": "header", "schema": variant, "description": "The same, by PromptPulse's name."},
        {"name": "x-ms-client-request-id", "in": "header",
         "schema": {"type": "string", "pattern": _CLIENT_REQUEST_ID},
         "description": "Your own id: recorded beside the gateway's and echoed back."},
        {"name": CLIENT_REQUEST_ID_HEADER, "in": "header", "schema": {"type": "string", "pattern": _CLIENT_REQUEST_ID},
         "description": "Your own id, when x-ms-client-request-id is not sent."},
        {"name": RUN_HEADER, "in": "header", "schema": {"type": "string", "pattern": _RUN_ID},
         "description": "Batch run id: judged fully, kept out of production figures."},
    ]
    errors = dict(_ERRORS)
    errors["400"] = errors["400"] + " Also a variant header sent twice, or the two naming different variants."
    errors["401"] = "Missing or invalid API key: the key decides the deployment."
    errors["403"] = "A variant header sent, but the key's deployment does not allow choosing the variant."
    errors["406"] = "Accept names neither application/json (or */*) nor, for a flow with a streamed output, " \
                    "text/event-stream."
    del errors["404"]
    responses: dict[str, Any] = {"200": {
        "description": "The flow's outputs only (JSON); or, when Accept names text/event-stream and the flow has a "
                       "streamed output, prompt flow's server-sent events: `data: {\"<output>\": \"<delta>\"}` per "
                       "delta, then one `data:` event with the other outputs (merge them in order), or an `error` "
                       "event. Headers: x-request-id, azureml-model-deployment (the variant), x-promptpulse-usage.",
        "content": {"application/json": {"schema": {"anyOf": outputs} if outputs else {"type": "object"}},
                    "text/event-stream": {"schema": _PF_SSE_EVENT}},
    }}
    responses |= {code: {"description": text, "content": {"application/json": {"schema": _PF_ERROR}}}
                  for code, text in sorted(errors.items())}
    return {
        "operationId": "score",
        "summary": "Run the flow of the key's deployment, as pf flow serve and Azure ML online endpoints answer",
        "tags": ["prompt flow"],
        "parameters": params,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"anyOf": inputs} if inputs else {"type": "object"}}}},
        "responses": responses,
    }


def _feedback_operation(runtime: DeploymentRuntime) -> dict[str, Any]:
    name = runtime.name
    return {
        "operationId": f"feedback_{name.replace('-', '_')}",
        "summary": f"Rate or comment on a response of {name}",
        "tags": [name],
        "parameters": [{"name": RUN_HEADER, "in": "header", "schema": {"type": "string", "pattern": _RUN_ID},
                        "description": "The batch run the rated request belongs to."}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["request_id"], "additionalProperties": False,
            "properties": {"request_id": {"type": "string", "format": "uuid"},
                           "rating": {"type": ["integer", "null"], "minimum": -100, "maximum": 100},
                           "comment": {"type": ["string", "null"], "maxLength": 4000}},
            # At least one of them: a rating, or a comment that is not empty.
            "anyOf": [{"required": ["rating"], "properties": {"rating": {"type": "integer"}}},
                      {"required": ["comment"], "properties": {"comment": {"type": "string", "minLength": 1}}}],
        }}}},
        "responses": {"202": {"description": "Recorded."}} | {
            code: {"description": _ERRORS[code], "content": {"application/json": {"schema": _ERROR}}}
            for code in ("400", "401", "404", "413", "429", "503")
        },
    }


def _otlp_operation() -> dict[str, Any]:
    return {
        "operationId": "otlp_traces",
        "summary": "OTLP/HTTP trace export from any application (docs/otlp.md); the key decides the deployment",
        "requestBody": {"required": True, "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {
                "type": "object", "description": "An ExportTraceServiceRequest in OTLP JSON (hex ids).",
                # proto3's JSON mapping reads null as the field's default (an empty list), as the route does.
                "properties": {"resourceSpans": {"type": ["array", "null"], "items": {"type": "object"}}},
            }},
        }},
        "responses": {"200": {"description": "Accepted: an empty ExportTraceServiceResponse."}} | {
            code: {"description": _ERRORS.get(code, "Unsupported media type"),
                   "content": {"application/json": {"schema": _ERROR}}}
            for code in ("400", "401", "413", "415", "429", "503")
        },
    }


_PROXY_SUMMARIES = {
    RESPONSES: "OpenAI Responses API", CHAT: "OpenAI chat completions", COMPLETIONS: "OpenAI text completions",
    EMBEDDINGS: "OpenAI embeddings",
}

# A minimal body the OpenAI API answers with 200, per operation (model added outside Azure paths):
# what the proxy passes through is the upstream's to check, so the schema requires no more.
_PROXY_EXAMPLES: dict[str, dict[str, Any]] = {
    RESPONSES: {"input": "What does PromptPulse watch?"},
    CHAT: {"messages": [{"role": "user", "content": "What does PromptPulse watch?"}]},
    COMPLETIONS: {"prompt": "PromptPulse watches"},
    EMBEDDINGS: {"input": "PromptPulse"},
}


def _proxy_operation(operation: str, path: str, azure_path: bool, variant: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI-compatible route of the proxy deployments (docs/proxy.md): the body passes
    through, so only what the proxy itself reads is described."""
    name = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    body: dict[str, Any] = {"type": "object", "description": "The OpenAI API's request body, passed through "
                            "(any field); the proxy reads model, stream and what it records."}
    example = dict(_PROXY_EXAMPLES[operation])
    if not azure_path:
        body["required"] = ["model"]
        body["properties"] = {"model": {"type": "string", "minLength": 1}}
        example = {"model": "gpt-4o-mini", **example}
    examples = {"json": {"summary": "The whole answer as JSON", "value": example}}
    if operation != EMBEDDINGS:
        examples["streamed"] = {"summary": "The answer as server-sent events", "value": {**example, "stream": True}}
    parameters: list[dict[str, Any]] = [
        {"name": VARIANT_HEADER, "in": "header", "required": False, "schema": variant,
         "description": "Force a variant of the key's deployment (only where allow_forced_variant: 403 "
                        "otherwise; listed: those of any proxy deployment that allows it)."}]
    if azure_path:
        parameters.append({"name": "model_deployment", "in": "path", "required": True,
                           "schema": {"type": "string", "minLength": 1}, "example": "gpt-4o-mini",
                           "description": "The upstream model deployment."})
    if path.startswith("/openai/") and not path.startswith("/openai/v1/"):
        parameters.append({"name": "api-version", "in": "query", "required": False, "schema": {"type": "string"},
                           "example": "2024-10-21",
                           "description": "Accepted; the connection's own api_version goes upstream."})
    return {
        "operationId": f"proxy_{name}",
        "summary": f"{_PROXY_SUMMARIES[operation]} through a proxy deployment (the key decides which)",
        "parameters": parameters,
        "requestBody": {"required": True, "content": {"application/json": {"schema": body, "examples": examples}}},
        "responses": {
            "200": {"description": "The upstream's answer, as it sent it (JSON, or a stream of its events).",
                    "content": {"application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "object"}}}},
            "default": {"description": "The upstream's own error status and body, passed through; or the "
                        "gateway's: 400 (not a JSON object, no model), 401, 403, 413 (proxy.max_body_bytes), 429, "
                        "502 llm_unreachable, 503, 504 llm_timeout."},
        },
    }


def _proxy_paths(registry: Registry) -> dict[str, Any]:
    # Which ids are valid depends on the key's deployment, as for /score.
    forced = sorted({name for rt in registry.proxies.values() if rt.deployment.allow_forced_variant
                     for name in rt.variants})
    variant: dict[str, Any] = {"type": "string", "enum": forced} if forced else {"type": "string"}
    paths: dict[str, Any] = {}
    for operation in OPERATIONS:
        for path in (f"/v1/{operation}", f"/openai/v1/{operation}"):
            paths[path] = {"post": _proxy_operation(operation, path, False, variant)}
        azure = f"/openai/deployments/{{model_deployment}}/{operation}"
        paths[azure] = {"post": _proxy_operation(operation, azure, True, variant)}
    paths["/openai/responses"] = {"post": _proxy_operation(RESPONSES, "/openai/responses", False, variant)}
    return paths


def openapi_document(registry: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name in sorted(registry.deployments):
        runtime = registry.deployments[name]
        paths[f"/v1/deployments/{name}/score"] = {"post": _score_operation(runtime)}
        paths[f"/v1/deployments/{name}/feedback"] = {"post": _feedback_operation(runtime)}
    paths["/score"] = {"post": _pf_score_operation(registry)}
    paths["/v1/traces"] = {"post": _otlp_operation()}
    if registry.proxies:  # only a gateway with proxy deployments answers them with more than 401
        paths.update(_proxy_paths(registry))
    plain = {"200": {"description": "OK"}}
    # Open to anyone (probes, scrapers): no key.
    paths["/healthz"] = {"get": {"summary": "The process is serving", "security": [], "responses": plain}}
    paths["/readyz"] = {"get": {"summary": "Ready for traffic", "security": [],
                                "responses": plain | {"503": {"description": "Not ready"}}}}
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "security": [], "responses": plain}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "PromptPulse gateway", "version": "1",
                 "description": "Deployed prompt flow flows. Every score reply carries x-request-id and traceresponse."},
        "paths": paths,
        "security": [{"bearer": []}, {"apiKey": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
            },
            "schemas": {"Error": {
                "type": "object", "required": ["error"],
                "properties": {
                    "error": {"type": "object", "required": ["type", "message"], "properties": _ERROR_FIELDS},
                    "request_id": {"type": "string"},
                },
            }},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    # Built per call: cheap, and always the current registry's.
    return json_response(openapi_document(request.app[DEPLOYMENTS].current))
