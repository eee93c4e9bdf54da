"""What running evaluation flows' ``aggregation: true`` nodes in the processor would cost.

Issue 13 leaves a choice: (a) run each evaluation flow's aggregation nodes in the processor over
each closed minute's per-request outputs and store the result per (evaluator, version, minute),
or (b) report them as not run. This measures the parts of (a) that a micro-benchmark can:

1. the per-request runs the processor makes anyway (the two fixture flows in
   tests/fixtures/flows/: eval_classification_accuracy, Python only, and eval_groundedness, one
   llm node against an in-process llmsim with no latency), CPU per run;
2. one aggregation node run over a minute's per-request outputs (N = 60, 600, 6000: a minute at
   1, 10 and 100 judged requests a second), called the way the runtime calls a Python node (in a
   worker thread), wall time per minute;
3. what buffering one (evaluator, version, minute) costs in memory until the minute closes:
   per request, the node outputs the aggregation nodes read and the flow inputs they may read
   (an aggregation node may take ``${inputs.context}``: then every judged text waits in memory).

What it cannot measure is written in docs/evaluators.md ("Aggregation nodes"): a minute's
requests are spread over the processor's workers (each owns some partitions), so a whole-minute
aggregate needs them brought together first.

Usage: ``python bench/flow_aggregation.py [--runs N]``. It prints, it does not assert. Needs
nothing running (llmsim starts in this process).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
from pathlib import Path
from typing import Any

from aiohttp import web
from openai import AsyncOpenAI

from services.llmsim.app import create_app
from services.llmsim.settings import LatencyModel, LlmsimSection
from shared.flow import FlowExecutor, load_flow
from shared.flow.python_node import call_tool

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "flows"
MINUTE_SIZES = (60, 600, 6000)
QUESTION = "Which city is the office in, and when does it open on weekdays?"
ANSWER = "The office is in Lyon and opens at nine every weekday, except public holidays. " * 4
CONTEXT = "Our only office is in Lyon. It opens at nine every weekday. Parking is free. " * 26  # ~2 KB


async def per_request_cpu(executor: FlowExecutor, inputs: dict[str, Any], runs: int) -> float:
    """CPU milliseconds per run (this process: the runtime, the client, and llmsim when used)."""
    await executor.run(inputs)  # warm: imports, first connection
    started = time.process_time()
    for _ in range(runs):
        await executor.run(inputs)
    return (time.process_time() - started) * 1000 / runs


async def aggregation_ms(flow_dir: str, node_name: str, outputs: list[Any], repeats: int = 5) -> float:
    flow = load_flow(FIXTURES / flow_dir)
    node = flow.nodes[node_name]
    assert node.aggregation and node.tool is not None
    (parameter,) = node.inputs  # the fixtures' aggregation nodes take one list
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        await call_tool(node.tool, {parameter: list(outputs)})
        best = min(best, time.perf_counter() - started)
    return best * 1000


def buffered_bytes(count: int, with_inputs: bool) -> int:
    """Bytes held for one (evaluator, version, minute) of ``count`` requests until it closes."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held: list[tuple[str, dict[str, Any]]] = []
    for index in range(count):
        entry: dict[str, Any] = {"parse_score": float(index % 10 + 1)}
        if with_inputs:
            # Fresh strings per request, as each decoded event has its own.
            entry["inputs"] = {"question": QUESTION + str(index), "answer": ANSWER + str(index),
                               "context": CONTEXT + str(index)}
        held.append((f"req-{index:08d}", entry))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    return after - before


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    runner = web.AppRunner(create_app(LlmsimSection(port=0, seed=7, latency=LatencyModel(
        ttft_ms=0, tokens_per_second=1_000_000, jitter=0))))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    try:
        accuracy = FlowExecutor(load_flow(FIXTURES / "eval_classification_accuracy"), {})
        groundedness = FlowExecutor(load_flow(FIXTURES / "eval_groundedness"), {"open_ai_connection": client})
        cpu_accuracy = await per_request_cpu(accuracy, {"groundtruth": "Billing", "prediction": "billing"}, args.runs)
        cpu_grounded = await per_request_cpu(
            groundedness, {"question": QUESTION, "answer": ANSWER, "context": CONTEXT}, max(args.runs // 3, 20))
    finally:
        await client.close()
        await runner.cleanup()

    print("1. per-request run, CPU per run (this process)")
    print(f"   eval_classification_accuracy (python node)          {cpu_accuracy:7.3f} ms")
    print(f"   eval_groundedness (llm node + python node, llmsim)  {cpu_grounded:7.3f} ms (llmsim's share included)")
    print("2. one aggregation node over a minute's outputs (best of 5, wall)")
    for size in MINUTE_SIZES:
        grades = ["Correct" if i % 4 else "Incorrect" for i in range(size)]
        scores = [float(i % 10 + 1) for i in range(size)]
        acc = await aggregation_ms("eval_classification_accuracy", "calculate_accuracy", grades)
        avg = await aggregation_ms("eval_groundedness", "average_groundedness", scores)
        share = (acc + avg) / 2 / (size * cpu_accuracy) * 100
        print(f"   N={size:5d}: calculate_accuracy {acc:7.3f} ms, average_groundedness {avg:7.3f} ms"
              f"  (~{share:.2f}% of the minute's per-request CPU for the cheapest flow)")
    print("3. memory held per (evaluator, version, minute) until it closes")
    for size in MINUTE_SIZES:
        small = buffered_bytes(size, with_inputs=False)
        large = buffered_bytes(size, with_inputs=True)
        print(f"   N={size:5d}: node outputs only {small / 1024:9.1f} KiB; with the flow inputs {large / 1024:9.1f} KiB")


if __name__ == "__main__":
    asyncio.run(main())
