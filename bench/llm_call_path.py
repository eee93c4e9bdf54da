"""CPU per LLM call in the flow runtime: the ``openai`` client's ways against the runtime's own path.

"models": ``client.chat.completions.create`` read through the pydantic models it returns (what
shared/flow/llm.py did first); "client.post": the runtime's ``_whole`` / ``_streamed`` given an
openai client (``client.post`` with plain JSON, openai's aiohttp transport, as the gateway built it
until the switch); "endpoint": the same functions given the LlmEndpoint the gateway builds now
(shared/flow/llm_http.py: plain aiohttp, retries armed, one shared session); "aiohttp": a bare
aiohttp request and line split, the floor of any Python client. llmsim runs in its own process
with instant answers (40 tokens), so this process's CPU time (``time.process_time``) is the
client-side cost. Rounds alternate the ways to spread machine noise; ratios compare ways measured
in the same run. Usage: ``.venv/bin/python bench/llm_call_path.py`` (about 1.5 minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.deployments import Connection  # noqa: E402
from shared.flow import llm  # noqa: E402
from shared.flow.clients import build_clients  # noqa: E402
from shared.upstream import upstream_session  # noqa: E402

ROUNDS = 5
CALLS = 60
MESSAGES = [
    {"role": "system", "content": "You answer briefly, citing the context."},
    {"role": "user", "content": "How does the gateway record a request while it runs the flow?"},
]
REQUEST = {"model": "llmsim-chat", "messages": MESSAGES, "max_tokens": 40, "temperature": 0.2}


async def old_whole(client: Any) -> tuple[str, Any]:
    response = await client.chat.completions.create(**REQUEST)
    first = response.choices[0]
    return first.message.content or "", (response.usage, response.model, response.id, first.finish_reason)


async def old_stream(client: Any) -> tuple[str, Any]:
    parts: list[str] = []
    usage = finish = None
    stream = await client.chat.completions.create(**REQUEST, stream=True, stream_options={"include_usage": True})
    async with stream:
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if choice.index == 0 and choice.delta.content:
                    parts.append(choice.delta.content)
                finish = choice.finish_reason or finish
    return "".join(parts), (usage, finish)


async def new_whole(client: Any) -> tuple[str, Any]:
    return await llm._whole(llm.CHAT, client, dict(REQUEST))


async def new_stream(client: Any) -> tuple[str, Any]:
    return await llm._streamed(llm.CHAT, client, dict(REQUEST), time.perf_counter(), lambda _delta: None)


async def aiohttp_whole(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(f"{url}/chat/completions", json=REQUEST, headers={"Authorization": "Bearer none"}) as r:
        r.raise_for_status()
        return (await r.json())["choices"][0]["message"]["content"]


async def aiohttp_stream(session: aiohttp.ClientSession, url: str) -> str:
    body = {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}
    parts: list[str] = []
    async with session.post(f"{url}/chat/completions", json=body, headers={"Authorization": "Bearer none"}) as r:
        r.raise_for_status()
        async for line in r.content:
            if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                for choice in json.loads(line[6:]).get("choices") or []:
                    parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


async def main(url: str) -> None:
    client = openai.AsyncOpenAI(base_url=url, api_key="none", http_client=openai.DefaultAioHttpClient(), max_retries=2)
    session = upstream_session()
    connection = Connection(name="sim", type="openai_compatible", base_url=url, api_key="none")
    [endpoint] = build_clients({"sim": connection}, ["sim"], session=session, max_retries=2, timeout=60.0).values()
    ways = {
        ("whole", "models"): lambda: old_whole(client),
        ("whole", "client.post"): lambda: new_whole(client),
        ("whole", "endpoint"): lambda: new_whole(endpoint),
        ("whole", "aiohttp"): lambda: aiohttp_whole(session, url),
        ("stream", "models"): lambda: old_stream(client),
        ("stream", "client.post"): lambda: new_stream(client),
        ("stream", "endpoint"): lambda: new_stream(endpoint),
        ("stream", "aiohttp"): lambda: aiohttp_stream(session, url),
    }
    # Same answer every way, else the comparison means nothing.
    wholes = {(await old_whole(client))[0], (await new_whole(client))[0], (await new_whole(endpoint))[0],
              await aiohttp_whole(session, url)}
    streams = {(await old_stream(client))[0], (await new_stream(client))[0], (await new_stream(endpoint))[0],
               await aiohttp_stream(session, url)}
    assert len(wholes) == 1 and len(streams) == 1, (wholes, streams)
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in ways}
    for rnd in range(ROUNDS):
        order = list(ways.items()) if rnd % 2 == 0 else list(reversed(ways.items()))
        for key, call in order:
            for _ in range(5):
                await call()  # warm the pool after the other ways ran
            started = time.process_time()
            for _ in range(CALLS):
                await call()
            cpu[key].append((time.process_time() - started) * 1000 / CALLS)
    await client.close()
    await endpoint.close()
    await session.close()
    names = ("models", "client.post", "endpoint", "aiohttp")
    print(f"openai {openai.__version__}, aiohttp {aiohttp.__version__}; {ROUNDS} alternating rounds x {CALLS} calls; "
          f"CPU ms per call (median)")
    print(f"{'mode':7} " + " ".join(f"{n:>11}" for n in names) + f" {'post/endpoint':>14}")
    for mode in ("whole", "stream"):
        figures = [statistics.median(cpu[(mode, way)]) for way in names]
        print(f"{mode:7} " + " ".join(f"{f:11.2f}" for f in figures) + f" {figures[1] / figures[2]:13.1f}x")
    print("(stream = one call of 40 streamed tokens plus the usage chunk)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        asyncio.run(main(f"http://127.0.0.1:{port}/v1"))
    finally:
        server.terminate()
        server.wait()
