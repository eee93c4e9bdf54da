"""The `promptpulse` CLI against the whole pipeline: every command as a subprocess
(`python -m services.cli ...`, as the console script runs it) with the environment
``LiveStack.cli_env()`` gives, asserting what it prints against what the API holds.

One live stack serves the file (module-scoped, on the module's event loop). It has no file
monitors, so the only alert that can fire is the one the alerts test makes: a real monitor,
set through the CLI, watching one variant's p95 latency with a threshold every request
exceeds; the aggregator's grace is 5 s, so its 1-minute window is evaluated about a minute
after the traffic, never faked. Drift (for the failing eval run) is switched off again before
the test returns.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.live_stack import REPO, LiveStack, StackOptions, free_port, live_stack

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
QUESTIONS = [
    "How does PromptPulse decide which requests to judge?",
    "What is the default sampling rate?",
    "Is the sampling decision deterministic?",
    "What does the sampling decision hash?",
    "Which requests does PromptPulse judge?",
    "What rate does the deployment use for sampling?",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveStack]:
    options = StackOptions(
        sampling_rate=1.0,
        monitors=[],  # only the alerts test's monitor can fire
        env={"aggregator": {"PROMPTPULSE_AGGREGATOR__MONITORS__GRACE_SECONDS": "5",
                            "PROMPTPULSE_AGGREGATOR__MONITORS__TICK_SECONDS": "1"}},
    )
    async with live_stack(tmp_path_factory.mktemp("cli"), options) as running:
        yield running


# -- running the CLI --------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


async def cli(stack: LiveStack, *args: str, within: float = 90.0, env: dict[str, str] | None = None) -> Result:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO, env={**stack.cli_env(), **(env or {})},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"promptpulse {' '.join(args)} still ran after {within:.0f} s:\n{out.decode()}\n{err.decode()}") from None
    result = Result(process.returncode or 0, out.decode(), err.decode())
    assert "Traceback" not in result.err, result.err
    return result


@dataclass
class Background:
    """A command that runs until stopped; its output is collected as it comes."""

    process: asyncio.subprocess.Process
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    readers: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    async def start(cls, stack: LiveStack, *args: str) -> Background:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", *args, cwd=REPO, env=stack.cli_env(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        running = cls(process)
        running.readers = [asyncio.create_task(running._read(process.stdout, running.out)),
                           asyncio.create_task(running._read(process.stderr, running.err))]
        return running

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode())

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    async def wait(self, check: Callable[[Background], object], within: float, what: str) -> object:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            found = check(self)
            if found:
                return found
            if self.process.returncode is not None:
                await asyncio.gather(*self.readers)  # all it wrote is read: one last look
                if found := check(self):
                    return found
                raise AssertionError(f"exited {self.process.returncode} before {what}:\n{self.stdout}\n{self.stderr}")
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {within:.0f} s waiting for {what}:\n{self.stdout}\n{self.stderr}")
            await asyncio.sleep(0.1)

    async def exited(self, within: float) -> int:
        code = await asyncio.wait_for(self.process.wait(), within)
        await asyncio.gather(*self.readers)
        return code

    async def interrupt(self, within: float = 20.0) -> int:
        """Ctrl-C, as a user stops it."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return await self.exited(within)
        finally:
            if self.process.returncode is None:
                self.process.kill()


def table_row(text: str, label: str) -> list[str]:
    """The cells of the last table row starting with ``label`` (rich's box drawing, piped)."""
    rows = [line for line in text.splitlines() if re.match(rf"^│ {re.escape(label)}\s+│", line)]
    assert rows, f"no row {label!r} in:\n{text}"
    return [cell.strip() for cell in rows[-1].strip("│ \n").split("│")][1:]


async def invoke(stack: LiveStack, question: str, *more: str) -> tuple[str, str, str, Result]:
    """(answer, request id, trace id, result) of one `promptpulse invoke`."""
    result = await cli(stack, "invoke", "demo", "-i", f"question={question}", *more)
    assert result.code == 0, result.err
    match = re.search(rf"request ({UUID})\s+variant (\S+)\s+trace ([0-9a-f]{{32}})", result.err)
    assert match, result.err
    return result.out.strip(), match.group(1), match.group(3), result


async def sampled_row(stack: LiveStack, request_id: str, metrics: int = 4) -> dict:
    """The request as the API lists it once every metric has judged it."""

    async def judged() -> dict | None:
        page = await stack.api("/v1/deployments/demo/requests?sampled=true&limit=100")
        rows = [r for r in page["requests"] if r["request_id"] == request_id]
        if rows and rows[0]["response"] and len(rows[0]["evaluations"]) == metrics:
            return rows[0]
        return None

    return await stack.wait_for(judged, 60, f"request {request_id} judged in the API")


async def settled_requests(stack: LiveStack) -> int:
    """The API's production request count once it stopped moving (earlier tests' requests
    may still be on their way in)."""
    last, same_since = None, 0.0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        count = (await stack.api("/v1/deployments/demo/metrics"))["overview"]["requests"]
        if count != last:
            last, same_since = count, loop.time()
        elif loop.time() - same_since >= 2.0:
            return count
        assert loop.time() < deadline, "the request count kept changing"
        await asyncio.sleep(0.5)


# -- the commands -----------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_invoke_prints_the_answer_and_a_request_id_the_api_knows(stack: LiveStack) -> None:
    answer, request_id, _, result = await invoke(stack, QUESTIONS[0], "--variant", "variant_0")
    assert answer and "variant variant_0" in result.err
    tokens = re.search(r"tokens (\d+) prompt \+ (\d+) completion = (\d+)", result.err)
    assert tokens, result.err
    row = await sampled_row(stack, request_id)
    assert row["outputs"]["answer"] == answer
    assert row["variant"] == "variant_0"
    assert [int(n) for n in tokens.groups()] == [row["response"]["tokens"][k] for k in ("prompt", "completion", "total")]

    streamed, stream_id, _, result = await invoke(stack, QUESTIONS[1], "--stream", "--variant", "variant_1")
    tokens = re.search(r"tokens (\d+) prompt \+ (\d+) completion = (\d+)", result.err)
    assert tokens, result.err
    row = await sampled_row(stack, stream_id)
    assert row["outputs"]["answer"] == streamed  # the deltas printed add up to the whole answer
    assert row["streaming"] is True
    assert [int(n) for n in tokens.groups()] == [row["response"]["tokens"][k] for k in ("prompt", "completion", "total")]


@pytest.mark.timeout(120)
async def test_metrics_request_count_equals_the_apis(stack: LiveStack) -> None:
    before = await settled_requests(stack)
    for question in QUESTIONS[:3]:
        await invoke(stack, question)

    async def ingested() -> int | None:
        count = (await stack.api("/v1/deployments/demo/metrics"))["overview"]["requests"]
        return count if count == before + 3 else None

    expected = await stack.wait_for(ingested, 60, "the three requests in the API's figures")
    result = await cli(stack, "metrics", "demo")
    assert result.code == 0, result.err
    overview = (await stack.api("/v1/deployments/demo/metrics"))["overview"]
    assert overview["requests"] == expected  # nothing else arrived meanwhile
    cells = table_row(result.out, "requests")
    assert int(cells[0].replace(",", "")) == expected
    assert sum(int(c.replace(",", "")) for c in cells[1:]) == expected  # one column per variant
    assert table_row(result.out, "tokens total")[0] == f"{overview['tokens']['total']:,}"
    assert table_row(result.out, "relevance average")[0].startswith(f"{overview['quality']['relevance']['average']:.2f}")


@pytest.mark.timeout(120)
async def test_metrics_follow_redraws_from_the_stream(stack: LiveStack) -> None:
    follow = await Background.start(stack, "metrics", "demo", "--follow", "--last", "15m")
    try:
        first = int(await follow.wait(lambda b: "requests" in b.stdout and table_row(b.stdout, "requests")[0],
                                      30, "the first table"))
        for question in QUESTIONS[:2]:
            await invoke(stack, question)
        await follow.wait(lambda b: int(table_row(b.stdout, "requests")[0]) == first + 2, 30,
                          "a table with the two new requests")
        events = [int(n) for n in re.findall(r"(\d+) stream events", follow.stdout)]
        assert events[-1] > events[0]  # redrawn because the stream said so
    finally:
        code = await follow.interrupt()
    assert code == 0, follow.stderr


@pytest.mark.timeout(120)
async def test_requests_lists_sampled_requests_with_scores(stack: LiveStack) -> None:
    _, request_id, _, _ = await invoke(stack, QUESTIONS[2], "--variant", "variant_1")
    row = await sampled_row(stack, request_id)
    result = await cli(stack, "requests", "demo", "--sampled", "--limit", "5", "--variant", "variant_1")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    start = next((i for i, ln in enumerate(lines) if request_id in ln), None)
    assert start is not None, result.out
    end = next(i for i in range(start + 1, len(lines)) if re.search(UUID, lines[i]) or lines[i].startswith("└"))
    block = "\n".join(lines[start:end])  # the request's row: one line per score
    assert "variant_1" in lines[start]
    for evaluation in row["evaluations"]:
        assert re.search(rf"│ {evaluation['metric']} {evaluation['score']}\s+│", block), block
    other = await cli(stack, "requests", "demo", "--variant", "variant_0", "--limit", "5")
    assert request_id not in other.out


@pytest.mark.timeout(120)
async def test_trace_shows_gateway_and_judge_spans(stack: LiveStack) -> None:
    _, request_id, trace_id, _ = await invoke(stack, QUESTIONS[3])

    async def judged_trace() -> dict | None:
        try:
            found = await stack.api(f"/v1/traces/{trace_id}")
        except AssertionError:  # 404 until the spans are ingested
            return None
        names = json.dumps(found)
        return found if names.count("gen_ai.evaluation.result") >= 4 and "invoke_workflow" in names else None

    await stack.wait_for(judged_trace, 60, "the trace with its four judge spans")
    result = await cli(stack, "trace", trace_id)
    assert result.code == 0, result.err
    text = result.out
    assert f"trace {trace_id}" in text
    assert "POST /v1/deployments/{deployment}/score  gateway" in text
    assert "invoke_workflow demo  gateway" in text
    assert "chat llmsim-chat  gateway" in text
    assert text.count("chat llmsim-judge  processor") == 4
    for metric in ("groundedness", "relevance", "coherence", "fluency"):
        assert f"score {metric}=" in text
    by_request = await cli(stack, "trace", request_id)
    assert by_request.code == 0, by_request.err
    assert f"is trace {trace_id}" in by_request.err and f"trace {trace_id}" in by_request.out

    async def judged_request() -> dict | None:
        try:
            found = await stack.api(f"/v1/requests/{request_id}")
        except AssertionError:
            return None
        return found if len(found["evaluations"]) == 4 else None

    stored = await stack.wait_for(judged_request, 60, "the request with its four scores")
    one = await cli(stack, "request", request_id)
    assert one.code == 0, one.err
    assert f"request {request_id}" in one.out and trace_id in one.out
    assert re.search(r"^deployment\s+demo\s+variant variant_\d", one.out, re.MULTILINE), one.out
    for evaluation in stored["evaluations"]:
        assert re.search(rf"^{evaluation['metric']}\s+{evaluation['score']}\b", one.out, re.MULTILINE), one.out
    assert re.search(r"^input question\s+What does the sampling", one.out, re.MULTILINE), one.out
    missing = await cli(stack, "request", "0192f000-0000-7000-8000-000000000000")
    assert missing.code == 4 and "is not stored" in missing.err


@pytest.mark.timeout(90)
async def test_monitors_list_set_and_refusals(stack: LiveStack) -> None:
    made = await cli(stack, "monitors", "demo", "set", "cli-relevance", "--statistic", "average",
                     "--metric", "relevance", "--threshold", "3.5", "--window", "5m", "--variant", "variant_0")
    assert made.code == 0, made.err
    changed = await cli(stack, "monitors", "demo", "set", "cli-relevance", "--threshold", "3")
    assert changed.code == 0, changed.err
    stored = {m["id"]: m for m in (await stack.api("/v1/deployments/demo/monitors"))["monitors"]}
    assert stored["cli-relevance"]["threshold"] == 3.0
    assert stored["cli-relevance"]["variant"] == "variant_0" and stored["cli-relevance"]["source"] == "api"
    listed = await cli(stack, "monitors", "demo")
    assert listed.code == 0
    assert re.search(r"cli-relevance\s+│ variant_0\s+│ relevance average\s+│ < 3\s+│ 5m", listed.out), listed.out

    invalid = await cli(stack, "monitors", "demo", "set", "cli-relevance", "--threshold", "9")
    assert invalid.code == 2 and "threshold" in invalid.err
    wrong_key = "ppapi_admin_wrong_" + "x" * 20
    refused = await cli(stack, "monitors", "demo", "set", "cli-relevance", "--threshold", "4",
                        env={"PROMPTPULSE_API_ADMIN_KEY": wrong_key})
    assert refused.code == 2 and "PROMPTPULSE_API_ADMIN_KEY" in refused.err
    assert wrong_key not in refused.err + refused.out  # keys are never printed
    removed = await cli(stack, "monitors", "demo", "remove", "cli-relevance")
    assert removed.code == 0 and "cli-relevance" not in removed.out


@pytest.mark.timeout(180)
async def test_alerts_subscribe_prints_the_alert_of_a_monitor_that_fires(stack: LiveStack) -> None:
    subscriber = await Background.start(stack, "alerts", "subscribe", "--deployment", "demo", "--exit-on-firing")
    try:
        await subscriber.wait(lambda b: "listening" in b.stderr, 30, "the subscriber to be ready")
        made = await cli(stack, "monitors", "demo", "set", "cli-latency", "--statistic", "latency_p95",
                         "--threshold", "0.001", "--window", "1m", "--min-samples", "1", "--variant", "variant_1")
        assert made.code == 0, made.err
        # Every request takes more than a millisecond: the first window with traffic fires.
        for _ in range(40):
            status, body = await stack.score("How fast is it?", variant="variant_1")
            assert status == 200, body
            if subscriber.process.returncode is not None:
                break
            await asyncio.sleep(3)
        code = await subscriber.exited(30)
    finally:
        if subscriber.process.returncode is None:
            await subscriber.interrupt()
        await cli(stack, "monitors", "demo", "remove", "cli-latency")
    assert code == 0, subscriber.stderr
    (line,) = [ln for ln in subscriber.out if ln.strip()]
    assert re.search(r"FIRING\s+cli-latency\s+demo/variant_1\s+latency_p95 [\d.e-]+ > 0\.001\s+\(window "
                     r"\d\d:\d\d:00-\d\d:\d\d:00, \d+ samples\)", line), line
    alerts = (await stack.api("/v1/alerts?deployment=demo&monitor=cli-latency&state=firing"))["alerts"]
    assert len(alerts) == 1  # (removing the monitor afterwards resolved it: a second transition)
    assert f"latency_p95 {alerts[0]['value']:.4g} > 0.001" in line


@pytest.mark.timeout(120)
async def test_tail_shows_a_streamed_answer(stack: LiveStack) -> None:
    tail = await Background.start(stack, "tail", "demo")
    try:
        await tail.wait(lambda b: "tailing" in b.stderr, 30, "tail to be ready")
        answer, request_id, _, _ = await invoke(stack, QUESTIONS[4], "--stream", "--variant", "variant_0")
        await invoke(stack, QUESTIONS[5])  # not streamed: no token chunks, no block
        block = await tail.wait(lambda b: re.search(rf"── {request_id} · demo/variant_0 · [\d:]+ ──\n(.*)\n── ok ·",
                                                    b.stdout, re.S), 30, "the streamed request's block")
    finally:
        code = await tail.interrupt()
    assert block.group(1) == answer
    assert code == 0, tail.stderr
    assert tail.stdout.count("── ok ·") == 1


@pytest.mark.timeout(240)
async def test_eval_run_compares_variants_and_its_exit_code_follows_the_threshold(
    stack: LiveStack, tmp_path: Path
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    production = await settled_requests(stack)
    command = ("eval", "run", "demo", "--data", str(data), "--variants", "variant_0,variant_1",
               "--threshold", "relevance=3.5", "--concurrency", "3", "--timeout", "90")

    passing = await cli(stack, *command, within=150)
    assert passing.code == 0, passing.out + passing.err
    assert table_row(passing.out, "rows answered / failed") == ["6 / 0", "6 / 0"]
    assert "PASS  variant_0: relevance average >= 3.5" in passing.out
    assert "PASS  variant_1: relevance average >= 3.5" in passing.out

    await stack.llmsim_control("drift", {"variant": "variant_1", "level": 1.0})
    try:
        failing = await cli(stack, *command, within=150)
    finally:
        await stack.llmsim_control("drift", {"variant": "variant_1", "level": None})
    assert failing.code == 1, failing.out + failing.err
    assert "PASS  variant_0: relevance average >= 3.5" in failing.out
    assert re.search(r"FAIL  variant_1: relevance average >= 3.5 \(got [\d.]+\)", failing.out), failing.out

    # The printed figures are the run's, as the API has them; runs stay out of production figures.
    run_id = re.search(r"run (eval-\S+):", failing.err).group(1)
    (entry,) = (await stack.api(f"/v1/runs/{run_id}"))["deployments"]
    assert entry["progress"]["evaluations"] == 12 * 4
    averages = table_row(failing.out, "relevance average")
    for cell, variant in zip(averages, ("variant_0", "variant_1"), strict=True):
        figures = entry["by_variant"][variant]["quality"]["relevance"]
        assert cell == f"{figures['average']:.2f} (n={figures['samples']})"
    assert entry["by_variant"]["variant_1"]["quality"]["relevance"]["average"] < 3.5
    assert await settled_requests(stack) == production


@pytest.mark.timeout(180)
async def test_compare_shows_the_apis_differences_and_fails_when_worse(stack: LiveStack) -> None:
    # variant_1 drifted: its answers lose relevance; 8 judged requests a variant, production.
    await stack.llmsim_control("drift", {"variant": "variant_1", "level": 1.0})
    try:
        sent = []
        for index in range(8):
            for variant in ("variant_0", "variant_1"):
                status, body = await stack.score(QUESTIONS[index % len(QUESTIONS)], variant=variant)
                assert status == 200, body
                sent.append(body["request_id"])
    finally:
        await stack.llmsim_control("drift", {"variant": "variant_1", "level": None})

    async def all_judged() -> bool:
        for request_id in sent:
            try:
                if len((await stack.api(f"/v1/requests/{request_id}"))["evaluations"]) < 4:
                    return False
            except AssertionError:
                return False
        return True

    await stack.wait_for(all_judged, 90, "every compared request judged")
    result = await cli(stack, "compare", "demo", "variant_0", "variant_1", "--last", "30m", "--json",
                       "--fail-if-worse")
    shown = json.loads(result.out)
    api = await stack.api(f"/v1/deployments/demo/compare?baseline=variant_0&candidate=variant_1&from={shown['from']}"
                          f"&to={shown['to']}".replace("+", "%2B"))
    assert shown["quality"] == api["quality"], "the CLI shows the API's answer"
    relevance = shown["quality"]["relevance"]
    assert relevance["candidate"]["average"] < relevance["baseline"]["average"]
    worse = [m for m, q in shown["quality"].items() if q["verdict"] == "worse"]
    assert result.code == (1 if worse else 0), (result.code, worse)

    table = await cli(stack, "compare", "demo", "variant_0", "variant_1", "--last", "30m")
    assert table.code == 0 and "variant_1 against variant_0" in table.out
    assert re.search(r"relevance\W+\d\.\d\d \(n=\d+\)\W+\d\.\d\d \(n=\d+\)", table.out), table.out
    refused = await cli(stack, "compare", "demo", "variant_0", "variant_0")
    assert refused.code == 2 and "two different variants" in refused.err


@pytest.mark.timeout(90)
async def test_unreachable_services_and_unknown_deployments(stack: LiveStack) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args in (("metrics", "demo", "--api-url", nowhere), ("invoke", "demo", "-i", "question=x", "--gateway-url", nowhere)):
        result = await cli(stack, *args)
        assert result.code == 3, result
        (line,) = result.err.splitlines()  # one line, no traceback
        assert nowhere in line and "make up" in line
    kafka = await cli(stack, "alerts", "subscribe", env={"PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    assert kafka.code == 3 and "cannot reach Kafka" in kafka.err and "make up" in kafka.err
    for args in (("metrics", "nope"), ("invoke", "nope", "-i", "question=x", "--key", "k" * 20)):
        result = await cli(stack, *args)
        assert result.code == 4, result
        assert "no deployment 'nope'" in result.err
