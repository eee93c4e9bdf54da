"""No bad input crashes anything: schemathesis against the gateway's and the aggregator's OpenAPI
documents, then the inputs a generator rarely reaches (issue 7, part 3).

One live stack for the module (tests/support/live_stack.py: llmsim, aggregator, processor and
gateway as real processes on their own topics and database). Each service's ``/openapi.json``
is loaded as it is served, so the gateway's score body is the demo flow's real input schema.
Every operation gets examples generated to fit the document (positive) and to break it
(negative), with valid keys configured per security scheme; the aggregator's operations get a
third pass with the path parameters of data that exists (the demo deployment, a stored trace, a
batch run), so each one also answers 2xx. Generation is derandomized: CI sends the same
requests every run.

Asserted for every response: no 5xx; the status is one the document lists; the body fits the
document's schema (server-sent events included); a request the document calls invalid is
refused; every 4xx is JSON ``{"error": {"type", "message"}}`` with a message. The one
exception is a request aiohttp's HTTP parser refuses before any route sees it (a request line
or header over its 8 KiB limits): that is a plain-text 400, and it must still name the
problem. After each part every service process still runs and answers /healthz.

The targeted cases: bodies over the limit (413), 100,000 levels of ``[`` (a 400 well within a
client timeout, never a RecursionError), numbers too large for any field, invalid UTF-8, and a
body sent under another content type.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import hypothesis.errors
import pytest
import pytest_asyncio
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from yarl import URL

from services.aggregator.api.auth import SESSION_BODY_BYTES
from services.aggregator.api.body import MAX_BODY_BYTES
from services.aggregator.api.params import encode_cursor
from services.gateway.settings import GatewaySection
from shared.apikeys import new_api_key_record
from tests.support.live_stack import LiveStack, StackOptions, live_stack

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
GATEWAY_EXAMPLES = 40  # per operation and mode
AGGREGATOR_EXAMPLES = 25
PROXY_EXAMPLES = 15  # 13 routes: each call goes through to llmsim
PROXY_KNOWN_EXAMPLES = 5  # per documented example body
KNOWN_DATA_EXAMPLES = 15  # aggregator operations again, on data that exists
CALL_TIMEOUT = 20.0  # seconds; a streamed answer is read until its end or max-stream-events
RUN_ID = "sweep-run-1"
PROXY = "sweep-proxy"
PROXY_BODY_LIMIT = 1 << 20  # the proxy deployment's own limit (proxy.max_body_bytes)
SWEEP_DESTINATION = "sweep-hook"
# aiohttp refuses these in its HTTP parser, before any middleware: plain text, status 400.
_PARSER_REFUSAL = "bytes when reading"
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)


# -- the stack, and what exists in it ---------------------------------------------------------------

@dataclass
class Known:
    """Ids of data the aggregator holds, for the pass that must reach existing resources."""

    trace_id: str
    run_id: str
    request_id: str


@pytest.fixture(scope="module")
def proxy_key() -> tuple[str, dict[str, Any]]:
    """The proxy deployment's key and its record (written into the deployment)."""
    key, record = new_api_key_record(PROXY)
    return key, record.model_dump(mode="json", exclude_none=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, proxy_key: tuple[str, dict[str, Any]]) -> AsyncIterator[LiveStack]:
    # Beside the demo flow, a proxy deployment in front of llmsim, so the gateway's document
    # lists (and the sweep reaches) the OpenAI-compatible routes (docs/proxy.md).
    proxy = {"name": PROXY, "type": "proxy", "proxy": {"connection": "llmsim", "max_body_bytes": PROXY_BODY_LIMIT},
             # Forced variants allowed, one on another model: the variant header is swept too.
             "variants": [{"id": "main", "weight": 1}, {"id": "next", "weight": 1, "model": "llmsim-next"}],
             "allow_forced_variant": True, "api_keys": [proxy_key[1]],
             "evaluation": {"metrics": ["relevance"], "sampling_rate": 0.0,
                            "judge": {"connection": "llmsim", "model": "llmsim-judge"}}}
    async with live_stack(tmp_path_factory.mktemp("sweep"), StackOptions(sampling_rate=0.1, deployment={
        # A destination whose variables are unset: its test route answers 200 (not delivered) with
        # no network call. Its name is the sweep's known path parameter.
        "destinations": [{"name": SWEEP_DESTINATION, "kind": "webhook", "url_env": "PP_SWEEP_UNSET_URL",
                          "secret_env": "PP_SWEEP_UNSET_SECRET"}]},
        files={f"{PROXY}.yaml": yaml.safe_dump(proxy)})) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def known(stack: LiveStack) -> Known:
    """One batch-run request through the gateway, waited for until its run and trace are stored."""
    status, body = await stack.score("What is sampled?", run=RUN_ID)
    assert status == 200, body
    request_id = body["request_id"]

    async def stored_trace() -> str | None:
        page = await stack.api(f"/v1/deployments/demo/requests?run_id={RUN_ID}")
        rows = [r for r in page["requests"] if r["request_id"] == request_id and r["trace_id"]]
        if not rows:
            return None
        async with aiohttp.ClientSession() as http, http.get(
            f"{stack.aggregator.url}/v1/traces/{rows[0]['trace_id']}",
            headers={"Authorization": f"Bearer {stack.read_key}"},
        ) as resp:
            return rows[0]["trace_id"] if resp.status == 200 else None

    trace_id = await stack.wait_for(stored_trace, 90, "the batch run's request and its trace in the aggregator")
    return Known(trace_id=trace_id, run_id=RUN_ID, request_id=request_id)


async def assert_all_healthy(stack: LiveStack) -> None:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        for service in stack.services.values():
            assert service.running, f"{service.name} exited ({service.process.returncode}):\n{service.log_tail()}"
            async with http.get(f"{service.url}/healthz") as resp:
                assert resp.status == 200, f"{service.name} /healthz: {resp.status}"


# -- the schemathesis sweep ---------------------------------------------------------------------------

@dataclass
class Sweep:
    """Responses seen and problems found, per operation ("POST /v1/...")."""

    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    problems: list[str] = field(default_factory=list)
    parser_refusals: int = 0

    def report(self) -> str:
        return "\n\n".join(self.problems[:15]) + (f"\n\n... {len(self.problems) - 15} more" if len(self.problems) > 15 else "")

    def without_2xx(self) -> list[str]:
        return sorted(op for op, counts in self.statuses.items() if not any(200 <= s < 300 for s in counts))


def error_problem(response: requests.Response) -> str | None:
    """What is wrong with a 4xx answer's body, or None: JSON, with error.type and error.message."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON ({response.headers.get('Content-Type')}): {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"no error object: {body!r:.200}"
    if not isinstance(error.get("type"), str) or not isinstance(error.get("message"), str) or not error["message"].strip():
        return f"error without a type and a message: {error!r:.200}"
    return None


def _describe(case: Any, response: requests.Response | None, what: str) -> str:
    status = f" -> {response.status_code} {response.text[:300]!r}" if response is not None else ""
    return f"{case.operation.label} [{what}]{status}\n{case.as_curl_command()[:1200]}"


def run_operation(sweep: Sweep, base_url: str, operation: Any, mode: GenerationMode, examples: int,
                  **fixed: Any) -> None:
    """Send ``examples`` generated requests for one operation and check each answer.

    Problems are collected, never raised inside the property, so hypothesis neither shrinks nor
    stops at the first one: the report lists everything one run found."""
    session = requests.Session()

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(operation.as_strategy(mode, **fixed))
    def check(case: Any) -> None:
        try:
            response = case.call(base_url=base_url, session=session, timeout=CALL_TIMEOUT)
        except requests.RequestException as exc:
            sweep.problems.append(_describe(case, None, f"request failed: {exc!r}"))
            return
        sweep.statuses[operation.label][response.status_code] += 1
        if response.status_code == 400 and _PARSER_REFUSAL in response.text:
            sweep.parser_refusals += 1  # refused before routing: plain text, but it names the problem
            return
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:
            failures = getattr(exc, "exceptions", [exc])
            titles = "; ".join(f"{getattr(f, 'title', type(f).__name__)}: {str(getattr(f, 'message', f))[:300]}"
                               for f in failures)
            sweep.problems.append(_describe(case, response, titles))
        if 400 <= response.status_code < 500:
            problem = error_problem(response)
            if problem:
                sweep.problems.append(_describe(case, response, f"4xx body: {problem}"))

    try:
        check()
    except hypothesis.errors.Unsatisfiable:
        # Nothing of this operation can be made invalid (no parameters, no body): no negative case.
        assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no positive example could be generated"
    finally:
        session.close()


def load_schema(url: str, auth: dict[str, dict[str, str]]) -> Any:
    document = requests.get(f"{url}/openapi.json", timeout=CALL_TIMEOUT).json()
    # One event is enough of a stream (the snapshot); without the limit a live stream runs to the timeout.
    config = schemathesis.Config.from_dict({"auth": {"openapi": auth}, "max-stream-events": 1})
    return schemathesis.openapi.from_dict(document, config=config)


def sweep_service(url: str, auth: dict[str, dict[str, str]], examples: int,
                  fixed: Callable[[Any], dict[str, Any] | list[dict[str, Any]] | None] = lambda _: None,
                  select: Callable[[Any], bool] = lambda _: True, known_examples: int = KNOWN_DATA_EXAMPLES) -> Sweep:
    """Each selected operation in both modes, then a positive pass per set of ``fixed`` parts."""
    schema = load_schema(url, auth)
    sweep = Sweep()
    for result in schema.get_all_operations():
        operation = result.ok()
        if not select(operation):
            continue
        for mode in MODES:
            run_operation(sweep, url, operation, mode, examples)
        known = fixed(operation)
        for parts in [known] if isinstance(known, dict) else known or []:
            run_operation(sweep, url, operation, GenerationMode.POSITIVE, known_examples, **parts)
    return sweep


def _assert_clean(sweep: Sweep, expected_operations: set[str]) -> None:
    assert not sweep.problems, f"{len(sweep.problems)} problems:\n\n{sweep.report()}"
    assert expected_operations <= set(sweep.statuses), sorted(sweep.statuses)
    assert sweep.without_2xx() == [], {op: dict(sweep.statuses[op]) for op in sweep.without_2xx()}


def is_proxy_route(operation: Any) -> bool:
    """The OpenAI-compatible routes, which take a proxy deployment's key (the demo's gets 401)."""
    return operation.definition.raw.get("operationId", "").startswith("proxy_")


@pytest.mark.timeout(240)
async def test_gateway_answers_every_generated_request_without_a_server_error(stack: LiveStack) -> None:
    auth = {"bearer": {"bearer": stack.demo_key}, "apiKey": {"api_key": stack.demo_key}}
    sweep = await asyncio.to_thread(sweep_service, stack.gateway.url, auth, GATEWAY_EXAMPLES,
                                    select=lambda operation: not is_proxy_route(operation))

    _assert_clean(sweep, {"POST /v1/deployments/demo/score", "POST /v1/deployments/demo/feedback",
                          "POST /score", "POST /v1/traces", "GET /healthz", "GET /readyz", "GET /metrics"})
    score = sweep.statuses["POST /v1/deployments/demo/score"]
    assert score[400] > 0, dict(score)  # the negative cases did reach the checks
    # Which parts negative generation mutates follows the document (40 derandomized examples):
    # since the variant headers gained prompt flow's ${node.variant} form, none of them happens to
    # hit the key. The key check is then proven directly, with each way a key can be presented.
    url = f"{stack.gateway.url}/v1/deployments/demo/score"
    for headers in ({}, {"api-key": "pp_wrong"}, {"Authorization": "Bearer pp_wrong"}):
        refused = await asyncio.to_thread(requests.post, url, json={"question": "q"}, headers=headers, timeout=10)
        assert refused.status_code == 401, (headers, refused.text)
        assert error_problem(refused) is None, refused.text
    await assert_all_healthy(stack)


PROXY_OPERATIONS = {f"POST {prefix}{operation}" for operation in ("responses", "chat/completions", "completions",
                                                                  "embeddings")
                    for prefix in ("/v1/", "/openai/v1/", "/openai/deployments/{model_deployment}/")}
PROXY_OPERATIONS.add("POST /openai/responses")


@pytest.mark.timeout(300)
async def test_proxy_routes_answer_every_generated_request_without_a_server_error(
    stack: LiveStack, proxy_key: tuple[str, dict[str, Any]],
) -> None:
    # With the proxy deployment's key; llmsim is the upstream, so a body it refuses comes back
    # as its own 4xx (OpenAI's error shape), which the checks hold to the same rules.
    key = proxy_key[0]
    auth = {"bearer": {"bearer": key}, "apiKey": {"api_key": key}}

    def documented_bodies(operation: Any) -> list[dict[str, Any]]:
        # Generated bodies rarely hold what the upstream needs (messages, input): the document's
        # example bodies (JSON and streamed) are sent too, with the other parts generated.
        examples = operation.definition.raw["requestBody"]["content"]["application/json"]["examples"]
        path = {"path_parameters": {"model_deployment": "llmsim-chat"}} if operation.path_parameters else {}
        return [{"body": example["value"], **path} for example in examples.values()]

    sweep = await asyncio.to_thread(sweep_service, stack.gateway.url, auth, PROXY_EXAMPLES, documented_bodies,
                                    is_proxy_route, PROXY_KNOWN_EXAMPLES)

    _assert_clean(sweep, PROXY_OPERATIONS)
    assert set(sweep.statuses) == PROXY_OPERATIONS, sorted(sweep.statuses)
    for label, counts in sweep.statuses.items():  # each documented body answered (JSON, and streamed)
        answered = sum(n for status, n in counts.items() if 200 <= status < 300)
        assert answered >= (1 if label.endswith("embeddings") else 2), (label, dict(counts))
    chat = sweep.statuses["POST /v1/chat/completions"]
    assert chat[400] > 0, dict(chat)  # the negative cases did reach the checks
    for headers in ({}, {"api-key": stack.demo_key}, {"Authorization": "Bearer pp_wrong"}):  # a flow's key too
        refused = await asyncio.to_thread(requests.post, f"{stack.gateway.url}/v1/chat/completions",
                                          json={"model": "m", "messages": []}, headers=headers, timeout=10)
        assert refused.status_code == 401, (headers, refused.text)
        assert error_problem(refused) is None, refused.text
    await assert_all_healthy(stack)


@pytest.mark.timeout(240)
async def test_aggregator_answers_every_generated_request_without_a_server_error(
    stack: LiveStack, known: Known,
) -> None:
    auth = {"readKey": {"bearer": stack.read_key}, "adminKey": {"bearer": stack.admin_key}}
    # A re-judge of a past window, for the routes that read one.
    now = datetime.now(UTC)
    rejudge = {"evaluator": "relevance", "from": (now - timedelta(minutes=10)).isoformat(),
               "to": (now - timedelta(minutes=1)).isoformat()}
    created = await asyncio.to_thread(requests.post, f"{stack.aggregator.url}/v1/deployments/demo/rejudges",
                                      json=rejudge, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=10)
    assert created.status_code == 202, created.text
    existing = {"deployment": "demo", "trace_id": known.trace_id, "run_id": known.run_id,
                "request_id": known.request_id, "destination": SWEEP_DESTINATION,
                "monitor_id": "demo-relevance-variant_0", "rejudge_id": created.json()["id"]}

    def fixed(operation: Any) -> dict[str, Any] | None:
        names = {p.name for p in operation.path_parameters}
        if operation.path == "/v1/deployments/{deployment}/rejudges" and operation.method.upper() == "POST":
            return {"path_parameters": {"deployment": "demo"}, "body": rejudge}
        if names:
            return {"path_parameters": {name: existing[name] for name in names}}
        if operation.path == "/v1/stream/metrics":
            return {"query": {"deployment": "demo"}}
        return None

    sweep = await asyncio.to_thread(sweep_service, stack.aggregator.url, auth, AGGREGATOR_EXAMPLES, fixed)

    _assert_clean(sweep, {
        "POST /v1/session", "DELETE /v1/session", "GET /v1/deployments", "GET /v1/deployments/{deployment}/metrics",
        "GET /v1/deployments/{deployment}/requests", "GET /v1/deployments/{deployment}/compare",
        "GET /v1/deployments/{deployment}/monitors",
        "PUT /v1/deployments/{deployment}/monitors", "GET /v1/deployments/{deployment}/silences",
        "POST /v1/deployments/{deployment}/monitors/{monitor_id}/silences",
        "DELETE /v1/deployments/{deployment}/monitors/{monitor_id}/silences", "GET /v1/requests/{request_id}", "GET /v1/traces/{trace_id}",
        "GET /v1/alerts", "GET /v1/destinations", "GET /v1/deliveries",
        "POST /v1/deployments/{deployment}/destinations/{destination}/test",
        "GET /v1/runs/{run_id}", "GET /v1/stream/metrics", "GET /healthz", "GET /readyz", "GET /metrics",
        "POST /v1/deployments/{deployment}/rejudges", "GET /v1/deployments/{deployment}/rejudges",
        "GET /v1/rejudges/{rejudge_id}",
    })
    await assert_all_healthy(stack)


# -- targeted cases -----------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    body: Any
    content_type: str

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and isinstance(self.body.get("error"), dict), self.body
        assert self.body["error"]["message"].strip(), self.body
        return self.body["error"]


async def send(url: str, data: bytes | Any, headers: dict[str, str], method: str = "POST") -> Answer:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http, http.request(
        method, url, data=data, headers=headers,
    ) as resp:
        text = await resp.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return Answer(resp.status, body, resp.content_type)


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    limit: int  # bytes of body accepted
    method: str = "POST"


def targets(stack: LiveStack) -> list[Target]:
    """Every route that reads a body, with a valid key."""
    gateway = {"api-key": stack.demo_key, "Content-Type": "application/json"}
    admin = {"Authorization": f"Bearer {stack.admin_key}", "Content-Type": "application/json"}
    gateway_limit = GatewaySection().max_body_bytes
    return [
        Target("score", stack.score_url, gateway, gateway_limit),
        Target("feedback", f"{stack.gateway.url}/v1/deployments/demo/feedback", gateway, gateway_limit),
        Target("monitors", f"{stack.aggregator.url}/v1/deployments/demo/monitors", admin, MAX_BODY_BYTES, "PUT"),
        Target("session", f"{stack.aggregator.url}/v1/session", {"Content-Type": "application/json"},
               SESSION_BODY_BYTES),
    ]


@pytest.mark.timeout(120)
async def test_bodies_over_the_limit_are_413_naming_the_limit(stack: LiveStack) -> None:
    big = json.dumps({"question": "x" * (2 << 20), "request_id": str(uuid.uuid4()), "monitors": []}).encode()
    for target in targets(stack):
        answer = await send(target.url, big, target.headers, target.method)
        assert answer.status == 413, (target.name, answer)
        assert answer.error["type"] == "body_too_large" and "bytes" in answer.error["message"], (target.name, answer)

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
            yield b'{"question": "'
            for _ in range(64):
                yield b"y" * 65536
            yield b'"}'

        answer = await send(target.url, chunked(), target.headers, target.method)
        assert answer.status == 413, (target.name, "chunked", answer)
        assert answer.error["type"] == "body_too_large", (target.name, answer)
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_deeply_nested_json_is_a_400_not_a_recursion_error(stack: LiveStack) -> None:
    # 1,000 levels exhaust Python's recursion limit; 100,000 fit the score and monitors limits.
    for depth in (3_000, 100_000):
        for body in (b"[" * depth, b'{"a":' * (depth // 2), b"[" * depth + b"]" * depth):
            for target in targets(stack):
                answer = await send(target.url, body, target.headers, target.method)
                if len(body) > target.limit:  # the session route takes 4 KiB at most
                    assert answer.status == 413, (target.name, depth, answer)
                    continue
                assert answer.status == 400, (target.name, depth, answer)
                assert "nested too deeply" in answer.error["message"], (target.name, answer)
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_numbers_too_large_for_any_field_are_400_naming_the_field(stack: LiveStack) -> None:
    gateway, feedback, monitors, _ = targets(stack)
    huge = "9" * 5000  # more digits than Python's int parser takes
    cases = [
        (gateway, f'{{"question": {huge}}}', None, "not valid JSON"),
        (gateway, '{"question": 1e400}', "question", "question"),  # parses as infinity
        (gateway, '{"question": 123456789012345678901234567890}', "question", "question"),
        (feedback, f'{{"request_id": "{uuid.uuid4()}", "rating": 1e400}}', "rating", "rating"),
        (feedback, f'{{"request_id": "{uuid.uuid4()}", "rating": 123456789012345678901234567890}}', "rating", "rating"),
        (monitors, f'{{"monitors": [{{"id": "m", "statistic": "error_rate", "threshold": {huge}, "window": "5m"}}]}}',
         "monitors", "not valid JSON"),
        (monitors, '{"monitors": [{"id": "m", "statistic": "error_rate", "threshold": 1e400, "window": "5m"}]}',
         "monitors[0].threshold", "finite"),
        (monitors, '{"monitors": [{"id": "m", "statistic": "error_rate", "threshold": 0.5, "window": 1e30}]}',
         "monitors[0].window", "window"),
    ]
    for target, raw, field_name, mentioned in cases:
        answer = await send(target.url, raw.encode(), target.headers, target.method)
        assert answer.status == 400, (target.name, raw[:120], answer)
        assert answer.error.get("field") == field_name, (target.name, raw[:120], answer)
        assert mentioned in answer.error["message"], (target.name, raw[:120], answer)
    # Numbers in inputs the flow does not declare are ignored, however large.
    answer = await send(gateway.url, b'{"question": "q", "unused": 1e400}', gateway.headers)
    assert answer.status == 200, answer
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_a_monitor_min_samples_beyond_what_a_window_row_holds_is_refused(stack: LiveStack) -> None:
    # monitor_windows.min_samples is a Postgres integer: a monitor accepted with more would make
    # every later evaluation pass fail (DataError), stopping all monitors, not just this one.
    monitors = targets(stack)[2]
    for min_samples in (2**31, 123456789012345678901234567890):
        raw = json.dumps({"monitors": [{"id": "m", "statistic": "error_rate", "threshold": 0.5, "window": "5m",
                                        "min_samples": min_samples}]})
        answer = await send(monitors.url, raw.encode(), monitors.headers, monitors.method)
        assert answer.status == 400, (min_samples, answer)
        assert answer.error["field"] == "monitors[0].min_samples", answer
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_invalid_utf8_is_a_400_saying_so(stack: LiveStack) -> None:
    for raw in (b'{"question": "\xff\xfe"}', b"\xc3\x28", b'{"key": "\xed\xa0\x80"}'):  # bad byte, bad pair, surrogate
        for target in targets(stack):
            answer = await send(target.url, raw, target.headers, target.method)
            assert answer.status == 400, (target.name, raw, answer)
            assert "not valid JSON" in answer.error["message"] and "utf-8" in answer.error["message"].lower(), (
                target.name, raw, answer)
    # A lone surrogate escape is valid JSON syntax, but no character: no event, json or text
    # column can hold it (it used to be a 500 in feedback comments and monitor webhooks).
    request_id = str(uuid.uuid4())
    for target, raw in zip(targets(stack), (
        b'{"question": "\\ud800"}',
        b'{"request_id": "' + request_id.encode() + b'", "comment": "ok \\udfff"}',
        b'{"monitors": [{"id": "m", "statistic": "error_rate", "threshold": 0.5, "window": "5m",'
        b' "notification": {"webhook_url": "http://x/\\ud800"}}]}',
        b'{"key": "\\ud800\\ud800"}',
    ), strict=True):
        answer = await send(target.url, raw, target.headers, target.method)
        assert answer.status == 400, (target.name, raw, answer)
        assert "surrogate" in answer.error["message"], (target.name, answer)
    # In a path or a query: refused as a bad name, in the same JSON shape.
    read = {"Authorization": f"Bearer {stack.read_key}"}
    for url, headers, status in (
        (f"{stack.gateway.url}/v1/deployments/%FF%FE/score", {"api-key": stack.demo_key}, 404),
        (f"{stack.aggregator.url}/v1/deployments/%FF/metrics", read, 400),
        (f"{stack.aggregator.url}/v1/alerts?deployment=%ED%A0%80", read, 400),
    ):
        method = "POST" if url.startswith(stack.gateway.url) else "GET"
        answer = await send(url, b"{}", headers, method)
        assert answer.status == status, (url, answer)
        assert answer.error["type"], answer
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_a_body_sent_under_another_content_type(stack: LiveStack) -> None:
    # Bodies are read as JSON whatever their declared type; when one is not JSON, the error
    # names the declared type as the likely mistake (a form post, a plain-text body).
    for target in targets(stack):
        for content_type, raw in (("application/x-www-form-urlencoded", b"question=What+is+sampled%3F"),
                                  ("text/plain", b"What is sampled?"), ("multipart/form-data; boundary=x", b"--x--")):
            headers = {**target.headers, "Content-Type": content_type}
            answer = await send(target.url, raw, headers, target.method)
            assert answer.status == 400, (target.name, content_type, answer)
            assert answer.content_type == "application/json"
            assert f"sent as {content_type.split(';')[0]}" in answer.error["message"], (target.name, answer)
    gateway = targets(stack)[0]
    answer = await send(gateway.url, b'{"question": "What is sampled?"}', {**gateway.headers, "Content-Type": "text/plain"})
    assert answer.status == 200, answer
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_times_at_the_edges_are_400_naming_the_parameter(stack: LiveStack) -> None:
    # Valid RFC 3339 texts whose UTC time falls outside what a datetime holds (they used to be
    # an OverflowError, a 500), and the same times inside a page cursor (an asyncpg DataError).
    read = {"Authorization": f"Bearer {stack.read_key}"}
    base = f"{stack.aggregator.url}/v1/deployments/demo"
    edges = ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999+00:00",
             "0001-01-01T00:00:00Z", "99999999999")
    routes = ((f"{base}/metrics", {}), (f"{base}/requests", {}), (f"{base}/violations", {}),
              (f"{base}/compare", {"baseline": "a", "candidate": "b"}))
    for edge in edges:
        for route, extra in routes:
            for name in ("from", "to"):
                url = str(URL(route).with_query({**extra, name: edge}))
                answer = await send(url, b"", read, "GET")
                assert answer.status == 400, (url, answer)
                assert answer.error["field"] == name and name in answer.error["message"], (url, answer)
    for cursor_time in (*edges, "9999-12-31T23:59:59", "2030-01-01T00:00:00"):  # the last two without a zone
        cursor = encode_cursor([cursor_time, str(uuid.uuid4())])
        answer = await send(f"{base}/requests?cursor={cursor}", b"", read, "GET")
        assert answer.status == 400, (cursor_time, answer)
        assert answer.error["field"] == "cursor", (cursor_time, answer)
    # The other parts of a cursor: a request id Postgres cannot hold, an alert id beyond bigint.
    for url in (f"{base}/requests?cursor={encode_cursor(['2030-01-01T00:00:00+00:00', 'a' + chr(0)])}",
                f"{stack.aggregator.url}/v1/alerts?cursor={encode_cursor([2**63])}",
                f"{stack.aggregator.url}/v1/alerts?cursor={encode_cursor([-2**70])}"):
        answer = await send(url, b"", read, "GET")
        assert answer.status == 400, (url, answer)
        assert answer.error["field"] == "cursor", (url, answer)
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_proxy_bodies_a_route_cannot_take_are_4xx_naming_the_problem(
    stack: LiveStack, proxy_key: tuple[str, dict[str, Any]],
) -> None:
    # The proxy reads bodies itself (its own limit, no flow inputs): the same rules as the score routes.
    headers = {"Authorization": f"Bearer {proxy_key[0]}", "Content-Type": "application/json"}
    for url in (f"{stack.gateway.url}/v1/chat/completions",
                f"{stack.gateway.url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"):
        big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * PROXY_BODY_LIMIT}]}).encode()
        answer = await send(url, big, headers)
        assert answer.status == 413, (url, answer)
        assert answer.error["type"] == "body_too_large" and "proxy.max_body_bytes" in answer.error["message"], answer

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
            yield b'{"model": "m", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"y" * 65536
            yield b'"}]}'

        answer = await send(url, chunked(), headers)
        assert answer.status == 413 and answer.error["type"] == "body_too_large", (url, answer)
        cases = [(b"[" * 100_000, "nested too deeply"), (b'{"a":' * 50_000, "nested too deeply"),
                 (b'{"model": "\xff\xfe"}', "utf-8"),
                 (b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
                 (b'["model", "m"]', "JSON object"), (b"", "empty")]
        if "/deployments/" not in url:  # an Azure deployment route names the model in its path
            cases.append((b'{"messages": []}', "model"))
        for raw, mentioned in cases:
            answer = await send(url, raw, headers)
            assert 400 <= answer.status < 500, (url, raw[:60], answer)
            assert mentioned in answer.error["message"], (url, raw[:60], answer)
        for content_type, raw in (("application/x-www-form-urlencoded", b"model=m&messages=hi"),
                                  ("text/plain", b"What is sampled?")):
            answer = await send(url, raw, {**headers, "Content-Type": content_type})
            assert answer.status == 400, (url, content_type, answer)
            assert f"sent as {content_type}" in answer.error["message"], (url, answer)
    await assert_all_healthy(stack)
