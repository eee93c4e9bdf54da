"""What the OpenAI-compatible proxy (a ``type: proxy`` deployment) adds to an LLM call.

One run, alternating round by round, wrk as the load generator (a C program: a Python client
saturates before the servers it measures). The modes:

- ``direct``: wrk calls the upstream. The upstream is written here (``--upstream``): a minimal
  aiohttp server answering ``/v1/chat/completions`` at once (JSON, or SSE: a role chunk, 8
  content chunks, a finish chunk, the usage chunk when asked, ``[DONE]``) and ``/v1/responses``
  (JSON, or typed events: created, in_progress, 8 text deltas, done, completed), so it is never
  the bottleneck and any added time is the proxy's;
- ``bare``: through a bare aiohttp pass-through proxy (``--proxy``, bench/harness.py): reads the body,
  posts it upstream on one shared ClientSession, relays status, content-type and chunks. No
  auth, no events: the floor of any aiohttp proxy;
- ``gw1`` / ``gw2``: through the PromptPulse gateway, a proxy deployment on an
  ``openai_compatible`` connection to the upstream, events and spans to the real Kafka broker
  under the bench's own topic prefix; one process (``gw1``) and ``--workers 2`` (``gw2``: a
  supervisor and two workers on one port).

Every path is warmed (1 s at 10 clients) before the measured rounds.

At 1 client (closed loop; wrk ``-c1``) and 100 clients (``-c100``), JSON and streamed chat
completions; the Responses API (JSON and streamed) at 1 client only, to keep the run short. wrk measures whole responses (a streamed one ends with its last chunk). Figures:

- added p50 and p99 at 1 client: mode's percentile minus direct's (median over rounds);
- throughput at 100 clients per worker, as a share of the bare proxy's (one process);
- CPU per request: utime+stime (``/proc/PID/stat``, all threads) of the serving process(es)
  before/after each run, over the requests wrk completed; for ``gw2`` summed over the workers;
- RSS per worker (``VmRSS``; ``VmHWM``: the peak) at the end.

The goals are printed pass/fail; nothing is asserted. Usage (needs Kafka on 127.0.0.1:9092,
wrk on PATH; about 2.5 minutes): ``.venv/bin/python bench/proxy_overhead.py``; ``--quick`` runs
one round of 1 s per mode (about 40 s) to check that every path works, its figures rougher still;
``--upstream-ms N`` makes the upstream wait N ms before it answers (a model is never instant: the
work a proxy does after relaying an answer then overlaps the next call's wait, as it would in use). On a shared 2-core
machine wrk, the upstream and the proxies compete for the same cores: figures are noisy, and
with 2 workers the machine has no spare core for the second one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import harness  # noqa: E402 - bench/harness.py, beside this file

ROUNDS = 3
SECONDS = 2
MODEL = "bench-chat"
QUESTION = "How does the proxy record a call while it relays the answer?"
WORDS = ["The", " proxy", " records", " the", " call", " while", " relaying", "."]
GOAL_ADDED_P50_MS, GOAL_ADDED_P99_MS = 1.0, 5.0
GOAL_THROUGHPUT_SHARE = 0.60
GOAL_CPU_FLAT = 1.2  # "flat": CPU/request with 2 workers at most 1.2x that with 1
GOAL_RSS_MB = 150.0


# ---- the upstream (``proxy_overhead.py --upstream PORT``): answers at once, OpenAI-shaped

def run_upstream(port: int) -> None:
    created = int(time.time())
    # --upstream-ms: the model's time to answer (or to its first chunk); 0 answers at once.
    delay = float(os.environ.get("PP_BENCH_UPSTREAM_MS", "0")) / 1000

    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        return b"data: " + json.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"

    usage = {"prompt_tokens": 14, "completion_tokens": len(WORDS), "total_tokens": 14 + len(WORDS)}
    whole = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": created, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                     "finish_reason": "stop"}], "usage": usage}).encode()
    stream = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in WORDS] + [
        chunk({}, "stop")]
    usage_chunk = b"data: " + json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                                         "created": created, "model": MODEL, "choices": [],
                                         "usage": usage}).encode() + b"\n\n"

    text = "".join(WORDS)
    responses_usage = {"input_tokens": 14, "output_tokens": len(WORDS), "total_tokens": 14 + len(WORDS)}
    message = {"type": "message", "id": "msg_bench", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": []}]}
    response_object = {"id": "resp_bench", "object": "response", "created_at": created, "status": "completed",
                       "model": MODEL, "output": [message], "usage": responses_usage}

    def typed(kind: str, **fields: object) -> bytes:
        return f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **fields}).encode() + b"\n\n"

    in_progress = {**response_object, "status": "in_progress", "output": [], "usage": None}
    response_whole = json.dumps(response_object).encode()
    response_stream = [typed("response.created", response=in_progress),
                       typed("response.in_progress", response=in_progress)] + [
        typed("response.output_text.delta", item_id="msg_bench", output_index=0, content_index=0, delta=w)
        for w in WORDS] + [typed("response.output_text.done", item_id="msg_bench", output_index=0,
                                 content_index=0, text=text),
                           typed("response.completed", response=response_object)]

    async def responses(request: web.Request) -> web.StreamResponse:
        streamed = (await request.json()).get("stream")
        if delay:
            await asyncio.sleep(delay)
        if not streamed:
            return web.Response(body=response_whole, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in response_stream:
            await response.write(piece)
        await response.write_eof()
        return response

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if delay:
            await asyncio.sleep(delay)
        if not body.get("stream"):
            return web.Response(body=whole, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in stream:
            await response.write(piece)
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(usage_chunk)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/responses", responses)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---- the processes under test

def proxy_deployments(work: Path, upstream: str) -> tuple[Path, str]:
    """The proxy deployment ``bench`` on the upstream; the folder and its API key."""
    return harness.write_deployments(work, "upstream", upstream, {"type": "proxy", "proxy": {"connection": "upstream"}})


class Services(harness.Processes):
    def __init__(self, work: Path) -> None:
        super().__init__(work, "bench-proxy-")
        self.urls = {name: f"http://127.0.0.1:{harness.free_port()}" for name in ("direct", "bare", "gw1", "gw2")}
        self.key = ""

    def pids(self, mode: str) -> list[int]:
        pid = self.procs[mode].pid
        return harness.process_tree(pid) if mode == "gw2" else [pid]

    def workers(self, mode: str) -> list[int]:
        """The processes that serve requests (gw2: the workers, not the supervisor)."""
        pids = self.pids(mode)
        return pids[1:] if mode == "gw2" else pids

    async def start(self) -> None:
        await self.create_topics()
        py = sys.executable
        port = {name: url.rsplit(":", 1)[1] for name, url in self.urls.items()}
        self._spawn("direct", [py, __file__, "--upstream", port["direct"]], {})
        self._spawn("bare", [py, __file__, "--proxy", port["bare"], self.urls["direct"]], {})
        deployments, self.key = proxy_deployments(self.work, self.urls["direct"])
        for mode, workers in (("gw1", 1), ("gw2", 2)):
            self._spawn(mode, [py, "-m", "services.gateway"], {
                "PROMPTPULSE_DEPLOYMENTS_DIR": deployments,
                "PROMPTPULSE_KAFKA__TOPIC_PREFIX": self.prefix,
                "PROMPTPULSE_GATEWAY__PORT": port[mode],
                "PROMPTPULSE_GATEWAY__WORKERS": str(workers),
                "PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_DIR": str(self.work / f"spool-{mode}"),
                "PROMPTPULSE_GATEWAY__PROVISION_DEMO_KEY": "false"})
        async with aiohttp.ClientSession() as session:
            for mode in ("direct", "bare", "gw1", "gw2"):
                await harness.wait_until_answers(
                    session, "POST", self.urls[mode] + "/v1/chat/completions", json={"model": MODEL, "messages": []},
                    headers={"Authorization": f"Bearer {self.key}"}, failed=f"{mode} did not come up; see {self.work}")
        if len(self.workers("gw2")) != 2:
            raise SystemExit(f"gw2 has workers {self.workers('gw2')}, not 2")

# ---- the load: wrk, a Lua script per body

# kind -> (path, streamed): chat completions at 1 and 100 clients, the Responses API at 1 client.
KINDS = {"json": ("/v1/chat/completions", False), "stream": ("/v1/chat/completions", True),
         "responses json": ("/v1/responses", False), "responses stream": ("/v1/responses", True)}
CHAT_KINDS = ("json", "stream")


def lua_script(work: Path, key: str, kind: str) -> Path:
    path_, stream = KINDS[kind]
    if path_ == "/v1/responses":
        body: dict[str, object] = {"model": MODEL, "input": QUESTION, "max_output_tokens": 40}
        if stream:
            body["stream"] = True
    else:
        body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 40}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
    return harness.wrk_script(work / f"{kind.replace(' ', '-')}.lua", body, key)


# ---- the run

def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


async def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="pp-proxy-bench-") as tmp:
        work = Path(tmp)
        services = Services(work)
        await services.start()
        # (clients, kind) -> mode -> list of per-round wrk results, plus CPU seconds per round
        results: dict[tuple[int, str], dict[str, list[dict[str, float]]]] = {}
        started = time.monotonic()
        try:
            scripts = {kind: lua_script(work, services.key, kind) for kind in KINDS}
            # Warm every path first (connection pools, lazy imports, first spans and events), so the
            # first measured runs do not pay for it.
            for mode in ("direct", "bare", "gw1", "gw2"):
                for kind in KINDS if mode != "gw2" else CHAT_KINDS:
                    harness.run_wrk(services.urls[mode] + KINDS[kind][0], scripts[kind], 10, seconds=1)
            for round_number in range(ROUNDS):
                for clients in (1, 100):
                    for kind in KINDS if clients == 1 else CHAT_KINDS:
                        modes = ["direct", "bare", "gw1"] + (["gw2"] if clients > 1 else [])
                        if round_number % 2:
                            modes.reverse()
                        for mode in modes:
                            pids = services.pids(mode)
                            before = harness.cpu_seconds(pids)
                            found = harness.run_wrk(services.urls[mode] + KINDS[kind][0], scripts[kind], clients,
                                                    SECONDS)
                            found["cpu_s"] = harness.cpu_seconds(pids) - before
                            results.setdefault((clients, kind), {}).setdefault(mode, []).append(found)
            rss = {mode: [harness.rss_mb(pid) for pid in services.workers(mode)] for mode in ("bare", "gw1", "gw2")}
        finally:
            await services.stop()
        elapsed = time.monotonic() - started
    report(results, rss, elapsed)


def report(results: dict[tuple[int, str], dict[str, list[dict[str, float]]]],
           rss: dict[str, list[tuple[float, float]]], elapsed: float) -> None:
    def figure(clients: int, kind: str, mode: str, name: str) -> float:
        return median([r[name] for r in results[(clients, kind)][mode]])

    def cpu_ms(clients: int, kind: str, mode: str) -> float:
        rounds = results[(clients, kind)][mode]
        return 1000 * sum(r["cpu_s"] for r in rounds) / max(1.0, sum(r["requests"] for r in rounds))

    load = os.getloadavg()
    print(f"\nproxy overhead: {os.cpu_count()} CPUs shared by wrk, the upstream, the bare proxy and two gateways "
          f"(and other work: load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}); {ROUNDS} alternating "
          f"rounds of {SECONDS} s per mode; bench took {elapsed:.0f} s. Noisy: compare ratios within this run.")
    upstream_ms = float(os.environ.get("PP_BENCH_UPSTREAM_MS", "0"))
    if upstream_ms:
        print(f"The upstream waits {upstream_ms:g} ms before it answers (--upstream-ms): read the 1-client rows; "
              f"at 100 clients every path is capped near {100_000 / upstream_ms:.0f} req/s by that wait.")
    errors = sum(r["errors"] for by_mode in results.values() for rounds in by_mode.values() for r in rounds)
    if errors:
        print(f"WARNING: {errors:.0f} non-2xx responses or socket errors during the run")
    print("\n| call | clients | direct | bare proxy | gateway | gateway, 2 workers |")
    print("|---|---:|---:|---:|---:|---:|")
    for clients in (1, 100):
        for kind in KINDS if clients == 1 else CHAT_KINDS:
            modes = ["direct", "bare", "gw1", "gw2"]
            for name, label in (("p50", "p50 ms"), ("p99", "p99 ms"), ("rps", "req/s")):
                cells = [f"{figure(clients, kind, m, name):.2f}" if m in results[(clients, kind)] else "-"
                         for m in modes]
                print(f"| {kind} {label} | {clients} | " + " | ".join(cells) + " |")
            if clients > 1:
                cells = [f"{cpu_ms(clients, kind, m):.3f}" for m in modes]
                print(f"| {kind} CPU ms/request | {clients} | " + " | ".join(cells) + " |")
    print("(direct's CPU is the upstream's; gateway, 2 workers: CPU summed over the workers and supervisor)")

    print("\n| goal | measured | goal | verdict |")
    print("|---|---:|---:|---|")
    for kind in KINDS:
        direct_p50, direct_p99 = figure(1, kind, "direct", "p50"), figure(1, kind, "direct", "p99")
        for mode, label in (("bare", "bare proxy"), ("gw1", "gateway")):
            added50 = figure(1, kind, mode, "p50") - direct_p50
            added99 = figure(1, kind, mode, "p99") - direct_p99
            floor = " (the floor, for comparison)" if mode == "bare" else ""
            print(f"| {kind}: {label} added p50 at 1 client{floor} | {added50:+.2f} ms | <= {GOAL_ADDED_P50_MS:g} ms |"
                  f" {verdict(added50 <= GOAL_ADDED_P50_MS)} |")
            print(f"| {kind}: {label} added p99 at 1 client{floor} | {added99:+.2f} ms | <= {GOAL_ADDED_P99_MS:g} ms |"
                  f" {verdict(added99 <= GOAL_ADDED_P99_MS)} |")
        if kind not in CHAT_KINDS:
            continue
        bare_rps = figure(100, kind, "bare", "rps")
        for mode, workers in (("gw1", 1), ("gw2", 2)):
            share = figure(100, kind, mode, "rps") / workers / bare_rps
            print(f"| {kind}: throughput per worker, {workers} worker(s), vs the bare proxy at 100 clients | "
                  f"{100 * share:.0f}% | >= {100 * GOAL_THROUGHPUT_SHARE:.0f}% | "
                  f"{verdict(share >= GOAL_THROUGHPUT_SHARE)} |")
        one, two = cpu_ms(100, kind, "gw1"), cpu_ms(100, kind, "gw2")
        print(f"| {kind}: CPU/request 2 workers vs 1 ({two:.3f} vs {one:.3f} ms; bare proxy "
              f"{cpu_ms(100, kind, 'bare'):.3f}) | {two / one:.2f}x | <= {GOAL_CPU_FLAT:g}x | "
              f"{verdict(two / one <= GOAL_CPU_FLAT)} |")
    for mode, label in (("gw1", "gateway"), ("gw2", "gateway, 2 workers")):
        for index, (now, peak) in enumerate(rss[mode]):
            print(f"| RSS {label}, worker {index} (peak {peak:.0f} MB) | {now:.0f} MB | <= {GOAL_RSS_MB:g} MB | "
                  f"{verdict(max(now, peak) <= GOAL_RSS_MB)} |")
    print(f"(bare proxy RSS {rss['bare'][0][0]:.0f} MB, peak {rss['bare'][0][1]:.0f} MB)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--upstream":
        run_upstream(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--proxy":
        harness.run_proxy(int(sys.argv[2]), sys.argv[3])
    else:
        if "--quick" in sys.argv[1:]:  # a check that every path runs: 1 round of 1 s (~40 s)
            ROUNDS, SECONDS = 1, 1
        if "--upstream-ms" in sys.argv[1:]:  # read by the upstream process, which inherits it
            os.environ["PP_BENCH_UPSTREAM_MS"] = str(float(sys.argv[sys.argv.index("--upstream-ms") + 1]))
        asyncio.run(main())
