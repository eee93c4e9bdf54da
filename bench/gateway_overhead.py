"""What the gateway adds on top of the LLM call: latency, time to first token, throughput, memory.

One run, five processes: llmsim (ttft 0, then 1,000 tokens/s: 40-token answers in 40 ms, so a
stream's tokens arrive one by one as a real model's do, only faster), the
gateway (one process, a one-node flow on llmsim, events to the real Kafka broker, spans to the
spans topic as in production), a bare aiohttp pass-through proxy (no flow, no events, no auth),
an "openai pass-through" (the same aiohttp handler, but making the call with the openai client
as the gateway's flows did until they switched to plain aiohttp (shared/flow/llm_http.py):
``client.post`` on openai's aiohttp transport; the floor of any gateway that calls its LLM
through the openai package), and this load generator. Each phase alternates
its modes round by round to spread machine noise.

1. Throughput: 100 clients in a closed loop, no pause: llmsim direct, bare proxy, openai
   pass-through, gateway (non-streaming), then llmsim direct, openai pass-through and gateway
   streaming. Beside requests/s, the CPU time each serving process used per request
   (``/proc/PID/stat``, all its threads: the gateway's span export and Kafka producers
   included): unlike requests/s, it hardly depends on what else the machine runs.
2. Latency at 1 client (closed loop), non-streaming: measured by wrk (``-c1``, bench/harness.py),
   as bench/proxy_overhead.py does, so that "added" is the gateway's and not this Python client's
   (a C client's own cost is small and steady). Direct, bare proxy ("proxy": the cost of one more
   aiohttp hop; in front of llmsim wrk too puts it at about +1.1 ms, docs/gateway.md) and gateway,
   each with the CPU time the serving process used per request.
3. Time to first token (streaming) at 1 client, and latency and TTFT at 100 clients sharing an
   offered load of half the slower path's throughput from 1 (so that latency is the path's cost,
   not queueing behind a saturated server): measured by this Python client, since wrk measures
   whole responses only (no time to first token) and runs closed loops only (no offered rate).
   The Python client adds its own cost to every path alike, so compare these rows within the run.
   At 1 client, "openai" is the same call made directly with the openai client (the floor of any
   gateway built on it).

Added = gateway minus direct, per percentile. Prints a table; asserts nothing. Usage:
``.venv/bin/python bench/gateway_overhead.py`` (needs Kafka on 127.0.0.1:9092 and wrk on PATH;
~4 minutes; ``PP_BENCH_ROUNDS=1`` for a quick look in under 2). To bench another tree's gateway,
run this file with ``PYTHONPATH`` set to that tree (the gateway is spawned with this environment).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import harness  # noqa: E402 - bench/harness.py, beside this file

ROUNDS = int(os.environ.get("PP_BENCH_ROUNDS", "3"))
SECONDS = 2.5
WRK_SECONDS = 3  # wrk takes whole seconds
QUESTION = "How does the gateway record a request while it runs the flow?"


# ---- the openai pass-through (`gateway_overhead.py --openai-proxy PORT UPSTREAM`): the bare
# proxy's handler, but the call goes through the openai client the gateway uses, with the same
# arguments (shared/flow/llm.py), and a streamed answer is re-sent chunk by chunk.

def run_openai_proxy(port: int, upstream: str) -> None:
    import json

    import openai

    options = {"security": {"bearer_auth": True}}

    async def forward(request: web.Request) -> web.StreamResponse:
        client: openai.AsyncOpenAI = request.app["client"]
        body = json.loads(await request.read())
        if not body.get("stream"):
            data = await client.post("/chat/completions", body=body, cast_to=object, options=options)
            return web.json_response(data)
        stream = await client.post("/chat/completions", body=body, cast_to=object, options=options, stream=True,
                                   stream_cls=openai.AsyncStream[object])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async with stream:
            async for chunk in stream:
                await response.write(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def client_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["client"] = openai.AsyncOpenAI(base_url=upstream + "/v1", api_key="none", max_retries=0,
                                           http_client=openai.DefaultAioHttpClient())
        yield
        await app["client"].close()

    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/v1/chat/completions", forward)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---- the processes under test

class Services(harness.Processes):
    def __init__(self, work: Path) -> None:
        super().__init__(work, "bench-")
        self.llmsim = f"http://127.0.0.1:{harness.free_port()}"
        self.proxy = f"http://127.0.0.1:{harness.free_port()}"
        self.openai_proxy = f"http://127.0.0.1:{harness.free_port()}"
        self.gateway = f"http://127.0.0.1:{harness.free_port()}"
        self.key = ""

    def _deployments(self) -> Path:
        flow = harness.write_answer_flow(self.work, "llmsim-chat", "llmsim")
        folder, self.key = harness.write_deployments(self.work, "llmsim", self.llmsim, {"flow": str(flow)})
        return folder

    async def start(self) -> None:
        await self.create_topics()
        py = sys.executable
        self._spawn("llmsim", [py, "-m", "services.llmsim"], {
            "PROMPTPULSE_LLMSIM__PORT": self.llmsim.rsplit(":", 1)[1], "PROMPTPULSE_LLMSIM__LATENCY__TTFT_MS": "0",
            "PROMPTPULSE_LLMSIM__LATENCY__TOKENS_PER_SECOND": "1000", "PROMPTPULSE_LLMSIM__LATENCY__JITTER": "0",
            "PROMPTPULSE_LLMSIM__ANSWER_TOKENS": "40"})
        self._spawn("proxy", [py, __file__, "--proxy", self.proxy.rsplit(":", 1)[1], self.llmsim], {})
        self._spawn("openai-proxy", [py, __file__, "--openai-proxy", self.openai_proxy.rsplit(":", 1)[1], self.llmsim], {})
        self._spawn("gateway", [py, "-m", "services.gateway"], {
            "PROMPTPULSE_DEPLOYMENTS_DIR": str(self._deployments()),
            "PROMPTPULSE_KAFKA__TOPIC_PREFIX": self.prefix,
            "PROMPTPULSE_GATEWAY__PORT": self.gateway.rsplit(":", 1)[1],
            "PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_DIR": str(self.work / "spool"),
            "PROMPTPULSE_GATEWAY__PROVISION_DEMO_KEY": "false"})
        async with aiohttp.ClientSession() as session:
            # The proxies have no health route: any answer (405 to a GET) means they are up.
            for url, up in ((self.llmsim + "/healthz", {200}), (self.gateway + "/readyz", {200}),
                            (self.proxy + "/v1/chat/completions", {405}),
                            (self.openai_proxy + "/v1/chat/completions", {405})):
                await harness.wait_until_answers(session, "GET", url, ok=frozenset(up), tries=200,
                                                 failed=f"{url} did not come up; see {self.work}")

    def cpu_seconds(self, name: str) -> float:
        """CPU time (user + system, all threads) a service process has used so far."""
        return harness.cpu_seconds([self.procs[name].pid])

    def rss_mb(self, name: str) -> tuple[float, float]:
        """(current, peak) resident memory of a service process, in MB."""
        return harness.rss_mb(self.procs[name].pid)

# ---- the load

class Target:
    def __init__(self, name: str, url: str, body: bytes, headers: dict[str, str], delta_marker: bytes) -> None:
        self.name, self.url, self.body, self.headers, self.delta_marker = name, url, body, headers, delta_marker


def targets(services: Services, stream: bool) -> dict[str, Target]:
    import json

    chat = json.dumps({"model": "llmsim-chat", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 40,
                       **({"stream": True, "stream_options": {"include_usage": True}} if stream else {})}).encode()
    plain = {"Content-Type": "application/json"}
    sse_delta = b'"content":"'
    return {
        "direct": Target("direct", services.llmsim + "/v1/chat/completions", chat, plain, sse_delta),
        "openai": Target("openai", services.llmsim + "/v1", b"", {}, b""),
        "proxy": Target("proxy", services.proxy + "/v1/chat/completions", chat, plain, sse_delta),
        "openai-proxy": Target("openai-proxy", services.openai_proxy + "/v1/chat/completions", chat, plain, sse_delta),
        "gateway": Target("gateway", services.gateway + "/v1/deployments/bench/score" + ("?stream=true" if stream else ""),
                          json.dumps({"question": QUESTION}).encode(),
                          {**plain, "Authorization": f"Bearer {services.key}"}, b"event: delta"),
    }


async def one_openai(client: Any, stream: bool) -> tuple[float, float | None]:
    started = time.perf_counter()
    first = None
    request = {"model": "llmsim-chat", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 40}
    if not stream:
        await client.chat.completions.create(**request)
        return time.perf_counter() - started, None
    response = await client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    async with response:
        async for chunk in response:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
    return time.perf_counter() - started, first


async def one(session: aiohttp.ClientSession, target: Target, stream: bool) -> tuple[float, float | None]:
    if target.name == "openai":
        return await one_openai(session, stream)
    started = time.perf_counter()
    first = None
    async with session.post(target.url, data=target.body, headers=target.headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {resp.status}: {(await resp.read())[:200]!r}")
        if stream:
            async for line in resp.content:
                if first is None and target.delta_marker in line and b'"content":""' not in line:
                    first = time.perf_counter() - started
        else:
            await resp.read()
    return time.perf_counter() - started, first


async def load(target: Target, clients: int, stream: bool, rate: float | None = None) -> dict[str, list[float] | float]:
    """``clients`` loops for SECONDS; with ``rate`` (req/s in total) each paces itself to rate/clients."""
    latencies: list[float] = []
    ttfts: list[float] = []
    if target.name == "openai":
        import openai

        session: Any = openai.AsyncOpenAI(base_url=target.url, api_key="none", max_retries=0,
                                          http_client=openai.DefaultAioHttpClient())
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    async with session:
        await one(session, target, stream)  # warm the connection pool
        stop = time.perf_counter() + SECONDS
        interval = clients / rate if rate else 0.0

        async def client(offset: float) -> None:
            next_at = time.perf_counter() + offset
            while True:
                now = time.perf_counter()
                if now >= stop:
                    return
                if interval:
                    if next_at > now:
                        await asyncio.sleep(next_at - now)
                    next_at += interval
                total, first = await one(session, target, stream)
                latencies.append(total)
                if first is not None:
                    ttfts.append(first)

        started = time.perf_counter()
        await asyncio.gather(*(client(n * interval / clients) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return {"latency": latencies, "ttft": ttfts, "rps": len(latencies) / elapsed}


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] * 1000 if len(values) > 1 else float("nan")


SERVES = {"direct": "llmsim", "openai": "llmsim", "proxy": "proxy", "openai-proxy": "openai-proxy", "gateway": "gateway"}


async def alternate(services: Services, modes: list[str], clients: int, stream: bool,
                    rate: float | None = None) -> dict[str, dict[str, list[float]]]:
    """Per mode: latencies, TTFTs, requests/s per round and CPU ms per request of the serving
    process per round."""
    found: dict[str, dict[str, list[float]]] = {m: {"latency": [], "ttft": [], "rps": [], "cpu": []} for m in modes}
    chosen = targets(services, stream)
    for round_number in range(ROUNDS):
        for mode in modes if round_number % 2 == 0 else list(reversed(modes)):
            cpu_before = services.cpu_seconds(SERVES[mode])
            result = await load(chosen[mode], clients, stream, rate)
            cpu = services.cpu_seconds(SERVES[mode]) - cpu_before
            found[mode]["latency"] += result["latency"]  # type: ignore[arg-type]
            found[mode]["ttft"] += result["ttft"]  # type: ignore[arg-type]
            found[mode]["rps"].append(result["rps"])  # type: ignore[arg-type]
            found[mode]["cpu"].append(1000 * cpu / max(1, len(result["latency"])))  # type: ignore[arg-type]
    return found


WRK_MODES = ["direct", "proxy", "gateway"]


def wrk_latency(services: Services) -> dict[str, dict[str, list[float]]]:
    """Non-streaming latency at 1 client by wrk, modes alternating round by round. Per mode and
    round: p50, p99 (ms) and the serving process's CPU ms per request."""
    chat = {"model": "llmsim-chat", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 40}
    chat_script = harness.wrk_script(services.work / "chat.lua", chat, services.key)
    flow_script = harness.wrk_script(services.work / "flow.lua", {"question": QUESTION}, services.key)
    runs = {"direct": (services.llmsim + "/v1/chat/completions", chat_script),
            "proxy": (services.proxy + "/v1/chat/completions", chat_script),
            "gateway": (services.gateway + "/v1/deployments/bench/score", flow_script)}
    for url, script in runs.values():  # warm connections and first-request paths
        harness.run_wrk(url, script, 1, 1)
    found: dict[str, dict[str, list[float]]] = {m: {"p50": [], "p99": [], "cpu": []} for m in WRK_MODES}
    for round_number in range(ROUNDS):
        for mode in WRK_MODES if round_number % 2 == 0 else list(reversed(WRK_MODES)):
            url, script = runs[mode]
            pid = services.procs[SERVES[mode]].pid
            before = harness.cpu_seconds([pid])
            result = harness.run_wrk(url, script, 1, WRK_SECONDS)
            if result["errors"]:
                print(f"WARNING: {mode}: {result['errors']:.0f} errors", file=sys.stderr)
            found[mode]["p50"].append(result["p50"])
            found[mode]["p99"].append(result["p99"])
            found[mode]["cpu"].append(1000 * (harness.cpu_seconds([pid]) - before) / max(1.0, result["requests"]))
    return found


def spread(values: list[float]) -> str:
    """The median over the rounds, and their range when there is more than one."""
    text = f"{statistics.median(values):.2f}"
    return text if len(values) == 1 else f"{text} ({min(values):.2f}-{max(values):.2f})"


async def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        services = Services(Path(tmp))
        await services.start()
        rows: list[tuple[str, ...]] = []
        try:
            at_one = wrk_latency(services)
            for p in (50, 99):
                direct, gateway = (statistics.median(at_one[m][f"p{p}"]) for m in ("direct", "gateway"))
                rows.append((f"latency p{p} (ms, wrk)", "1", f"{direct:.2f}", "-",
                             f"{statistics.median(at_one['proxy'][f'p{p}']):.2f}", f"{gateway:.2f}",
                             f"{gateway - direct:+.2f}"))
            whole = await alternate(services, ["direct", "proxy", "openai-proxy", "gateway"], 100, False)
            streamed = await alternate(services, ["direct", "openai-proxy", "gateway"], 100, True)
            best = {m: max(v["rps"]) for m, v in whole.items()}
            best_stream = {m: max(v["rps"]) for m, v in streamed.items()}
            cpu = {m: statistics.median(v["cpu"]) for m, v in whole.items()}
            cpu_stream = {m: statistics.median(v["cpu"]) for m, v in streamed.items()}
            for clients in (1, 100):
                for stream in (False, True) if clients > 1 else (True,):
                    capacity = best_stream if stream else best
                    offered = round(min(capacity["direct"], capacity["gateway"]) / 2) if clients > 1 else None
                    modes = ["direct", "openai", "proxy", "gateway"] if clients == 1 else ["direct", "gateway"]
                    found = await alternate(services, modes, clients, stream, offered)
                    metric = "ttft" if stream else "latency"
                    label = ("TTFT" if stream else "latency") + (f" @ {offered} req/s" if offered else "")
                    for p in (50, 99):
                        direct, gateway = pct(found["direct"][metric], p), pct(found["gateway"][metric], p)
                        others = [f"{pct(found[m][metric], p):.2f}" if m in found else "-" for m in ("openai", "proxy")]
                        rows.append((f"{label} p{p} (ms)", str(clients), f"{direct:.2f}", *others,
                                     f"{gateway:.2f}", f"{gateway - direct:+.2f}"))
            gateway_rss, gateway_peak = services.rss_mb("gateway")
            _, proxy_peak = services.rss_mb("proxy")
        finally:
            await services.stop()
    print(f"\ngateway overhead: {os.cpu_count()} CPUs shared by llmsim, gateway, proxy and this client; "
          f"{ROUNDS} alternating rounds of {SECONDS:g} s per mode\n")
    print(f"| {'measure':<30} | clients | {'direct':>8} | {'openai':>8} | {'proxy':>8} | {'gateway':>8} | "
          f"{'added':>8} |")
    print(f"|{'-' * 32}|---------|" + f"{'-' * 10}|" * 5)
    for row in rows:
        print(f"| {row[0]:<30} | {row[1]:>7} | " + " | ".join(f"{cell:>8}" for cell in row[2:]) + " |")
    print(f"\n| {'100 clients, closed loop':<32} | {'req/s':>8} | {'stream':>8} | {'CPU ms/req':>10} | {'stream':>8} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 10}|{'-' * 12}|{'-' * 10}|")
    for mode, label in (("direct", "llmsim direct (llmsim's CPU)"), ("proxy", "bare aiohttp proxy"),
                        ("openai-proxy", "openai pass-through"), ("gateway", "gateway")):
        stream_rps = f"{best_stream[mode]:.0f}" if mode in best_stream else "-"
        stream_cpu = f"{cpu_stream[mode]:.2f}" if mode in cpu_stream else "-"
        print(f"| {label:<32} | {best[mode]:>8.0f} | {stream_rps:>8} | {cpu[mode]:>10.2f} | {stream_cpu:>8} |")
    print(f"| {'gateway / bare proxy':<32} | {100 * best['gateway'] / best['proxy']:>7.0f}% | {'-':>8} | "
          f"{cpu['gateway'] / cpu['proxy']:>9.1f}x | {'-':>8} |")
    print(f"| {'openai pass-through / bare proxy':<32} | {100 * best['openai-proxy'] / best['proxy']:>7.0f}% | "
          f"{'-':>8} | {cpu['openai-proxy'] / cpu['proxy']:>9.1f}x | {'-':>8} |")
    print("(CPU ms/req: median over the rounds of the serving process's CPU time per completed request)")
    print(f"\n| {'1 client, wrk, per round':<32} | {'p50 ms':>20} | {'p99 ms':>20} | {'CPU ms/req':>20} |")
    print(f"|{'-' * 34}|{'-' * 22}|{'-' * 22}|{'-' * 22}|")
    for mode, label in (("direct", "llmsim direct (llmsim's CPU)"), ("proxy", "bare aiohttp proxy"),
                        ("gateway", "gateway")):
        print(f"| {label:<32} | {spread(at_one[mode]['p50']):>20} | {spread(at_one[mode]['p99']):>20} | "
              f"{spread(at_one[mode]['cpu']):>20} |")
    added = [g - d for g, d in zip(at_one["gateway"]["p50"], at_one["direct"]["p50"], strict=True)]
    hop = [g - d for g, d in zip(at_one["proxy"]["p50"], at_one["direct"]["p50"], strict=True)]
    print(f"added p50 per round: gateway {spread(added)} ms, bare proxy {spread(hop)} ms "
          f"(goal for the gateway: <= 1 ms p50, <= 5 ms p99)")
    print(f"\nRSS: gateway {gateway_rss:.0f} MB now, {gateway_peak:.0f} MB peak; bare proxy {proxy_peak:.0f} MB peak")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--proxy":
        harness.run_proxy(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "--openai-proxy":
        run_openai_proxy(int(sys.argv[2]), sys.argv[3])
    else:
        asyncio.run(main())
