"""Gateway CPU per flow request, this tree against a baseline commit, in one alternating run.

bench/proxy_cpu.py's method for a ``type: flow`` deployment: bench/proxy_overhead.py's instant
upstream (8-word answers, JSON and SSE), a gateway from this tree (``new``) and one from
``--baseline REF`` (``old``, from ``git archive``), both serving the same one-llm-node flow on that
upstream with events and spans to the real broker; wrk drives ``POST
/v1/deployments/bench/score`` (JSON, and ``?stream=true``) on each in alternating order, round by
round. Printed: CPU ms per request of each gateway process (utime+stime of all its threads),
median over rounds, and new/old paired per round. It measures what the flows' LLM call path
costs the gateway, e.g. ``--baseline 1ad8e18`` (flows on the openai client's ``client.post``)
against plain aiohttp (shared/flow/llm_http.py).

Usage (needs Kafka on 127.0.0.1:9092 and wrk; about 1.5 minutes with the defaults)::

    .venv/bin/python bench/flow_cpu.py --baseline 1ad8e18
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402 - processes, /proc CPU, wrk
import proxy_cpu  # noqa: E402
import proxy_overhead as po  # noqa: E402 - the instant upstream

KINDS = {"json": "/v1/deployments/bench/score", "stream": "/v1/deployments/bench/score?stream=true"}


class Gateways(proxy_cpu.Gateways):
    """proxy_cpu's gateways pair serving the one-llm-node flow on the instant upstream."""

    SERVERS = ("upstream",)
    PREFIX = "bench-flow-"

    def _start_servers(self, py: str, port: dict[str, str]) -> str:
        self._spawn("upstream", [py, str(BENCH / "proxy_overhead.py"), "--upstream", port["upstream"]], {}, cwd=REPO)
        flow = harness.write_answer_flow(self.work, po.MODEL, "upstream")
        deployments, self.key = harness.write_deployments(self.work, "upstream", self.urls["upstream"],
                                                          {"flow": str(flow)})
        return str(deployments)

    def _probe(self, name: str) -> tuple[str, dict[str, object]] | None:
        return (self.urls[name] + KINDS["json"], {"question": "up?"}) if name in self.trees else None



def measure(gateways: Gateways, args: argparse.Namespace) -> None:
    modes = list(gateways.trees)
    script = harness.wrk_script(gateways.work / "score.lua", {"question": po.QUESTION}, gateways.key)
    for mode in modes:  # warm: pools, lazy imports, first spans and events
        for kind in KINDS:
            harness.run_wrk(gateways.urls[mode] + KINDS[kind], script, args.clients, seconds=1)
    cpu: dict[tuple[str, str], list[float]] = {}
    for round_number in range(args.rounds):
        for kind in KINDS:
            order = modes if round_number % 2 == 0 else list(reversed(modes))
            for mode in order:
                found = harness.wrk_cpu_per_request(gateways.procs[mode].pid, gateways.urls[mode] + KINDS[kind],
                                                    script, args.clients, args.seconds, f"{mode} {kind}")
                cpu.setdefault((mode, kind), []).append(found["cpu"])
    load = os.getloadavg()
    print(f"\ngateway CPU per flow request (one llm node), {args.rounds} alternating rounds of {args.seconds} s "
          f"at {args.clients} clients (load average {load[0]:.2f}); median over rounds, ms")
    print("| call | " + " | ".join(modes) + (" | new/old (range) |" if "old" in modes else " |"))
    print("|---|" + "---:|" * (len(modes) + ("old" in modes)))
    for kind in KINDS:
        cells = [f"{statistics.median(cpu[(mode, kind)]):.3f}" for mode in modes]
        if "old" in modes:
            cells.append(harness.paired_ratio(cpu[("new", kind)], cpu[("old", kind)]))
        print(f"| {kind} | " + " | ".join(cells) + " |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a git ref to compare with (its gateway runs as 'old')")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flow-cpu-") as tmp:
        work = Path(tmp)
        trees = harness.gateway_trees(work, args.baseline)
        gateways = Gateways(work, trees)
        try:
            await gateways.start()
            measure(gateways, args)
        finally:
            await gateways.stop()


if __name__ == "__main__":
    asyncio.run(main())
