"""openai client transports against llmsim: default httpx vs DefaultAioHttpClient (aiohttp).

llmsim runs in its own process (instant answers: ttft 0, 1e6 tokens/s), so the figures are the
client-side cost of each transport. Rounds alternate transports to spread machine noise.
"""

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parents[1]  # llmsim runs from this checkout, wherever it is

ROUNDS = 3
DURATION = 3.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


async def one(client, stream):
    t0 = time.perf_counter()
    if stream:
        s = await client.chat.completions.create(
            model="llmsim-chat",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
        first = None
        async with s:
            async for _ in s:
                if first is None:
                    first = time.perf_counter() - t0
        return time.perf_counter() - t0, first
    await client.chat.completions.create(
        model="llmsim-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=40
    )
    return time.perf_counter() - t0, None


async def load(client, concurrency, stream):
    lat, ttft = [], []
    stop = time.perf_counter() + DURATION

    async def worker():
        while time.perf_counter() < stop:
            total, first = await one(client, stream)
            lat.append(total)
            if first is not None:
                ttft.append(first)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    def q(xs, p):
        return statistics.quantiles(xs, n=100)[p - 1] * 1000 if len(xs) > 2 else float("nan")
    return len(lat) / elapsed, q(lat, 50), q(lat, 99), (q(ttft, 50) if ttft else None)


def make(kind, base):
    http = openai.DefaultAioHttpClient() if kind == "aiohttp" else openai.DefaultAsyncHttpxClient()
    return openai.AsyncOpenAI(base_url=base, api_key="none", http_client=http, max_retries=0)


async def main(base):
    results = {}
    for rnd in range(ROUNDS):
        for kind in ("httpx", "aiohttp") if rnd % 2 == 0 else ("aiohttp", "httpx"):
            client = make(kind, base)
            await one(client, False)  # warm the pool
            for conc in (1, 10, 100):
                for stream in (False, True):
                    results.setdefault((kind, conc, stream), []).append(
                        await load(client, conc, stream)
                    )
            await client.close()
    print(
        f"{'transport':9} {'conc':>4} {'mode':7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ttft p50':>8}"
    )
    for (kind, conc, stream), rows in sorted(
        results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])
    ):
        rps = statistics.median(r[0] for r in rows)
        p50 = statistics.median(r[1] for r in rows)
        p99 = statistics.median(r[2] for r in rows)
        tt = statistics.median(r[3] for r in rows) if rows[0][3] is not None else float("nan")
        print(
            f"{kind:9} {conc:>4} {'stream' if stream else 'whole':7} {rps:8.0f} {p50:8.2f} {p99:8.2f} {tt:8.2f}"
        )


if __name__ == "__main__":
    port = free_port()
    env = {
        **os.environ,
        "PROMPTPULSE_LLMSIM__PORT": str(port),
        "PROMPTPULSE_LLMSIM__LATENCY__TTFT_MS": "0",
        "PROMPTPULSE_LLMSIM__LATENCY__TOKENS_PER_SECOND": "1000000",
        "PROMPTPULSE_LLMSIM__LATENCY__JITTER": "0",
        "PROMPTPULSE_TELEMETRY__LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "-m", "services.llmsim"], env=env, cwd=REPO)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        print(f"openai {openai.__version__}")
        asyncio.run(main(f"http://127.0.0.1:{port}/v1"))
    finally:
        server.terminate()
        server.wait()
