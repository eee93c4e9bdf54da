"""Gateway CPU per proxied request, this tree against a baseline commit, in one alternating run.

Wall-clock figures on a shared machine are noise; the CPU time the serving process spends per
request (utime+stime of all its threads, span export and Kafka producer included) hardly
depends on what else runs. This starts bench/proxy_overhead.py's instant upstream and bare
proxy, a gateway from this tree (``new``) and, with ``--baseline REF``, one from that commit
(``old``, checked out into a temporary folder), both with the same proxy deployment, events
and spans to the real broker; then, round by round in alternating order, drives each with
wrk (``--clients``, JSON and streamed chat completions) and prints CPU ms per request, the
median over rounds, and new/old and new/bare ratios.

``--profile SECONDS`` instead records the ``new`` gateway under load with py-spy (must be on
PATH or in the venv) into ``--out`` (a speedscope or flamegraph file by its extension).

Usage (needs Kafka on 127.0.0.1:9092 and wrk; about 1 minute with the defaults)::

    .venv/bin/python bench/proxy_cpu.py --baseline main
    .venv/bin/python bench/proxy_cpu.py --profile 20 --out /tmp/gw.svg
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402 - processes, /proc CPU, wrk
import proxy_overhead as po  # noqa: E402 - the bench's upstream, its deployment, wrk scripts


class Gateways(harness.Processes):
    """The gateways of ``trees`` (name -> source tree) on shared upstream servers, their topics and
    logs. bench/flow_cpu.py subclasses it: other servers, deployments and readiness probe."""

    SERVERS: tuple[str, ...] = ("direct", "bare")
    PREFIX = "bench-cpu-"

    def __init__(self, work: Path, trees: dict[str, Path]) -> None:
        super().__init__(work, self.PREFIX)
        self.trees = trees
        self.urls = {name: f"http://127.0.0.1:{harness.free_port()}" for name in (*self.SERVERS, *trees)}
        self.key = ""
        self.new_env: dict[str, str] = {}  # --new-env: e.g. OTEL_TRACES_SAMPLER=always_off to price spans

    async def start(self) -> None:
        await self.create_topics()
        py, port = sys.executable, {name: url.rsplit(":", 1)[1] for name, url in self.urls.items()}
        deployments = self._start_servers(py, port)
        for name, tree in self.trees.items():
            # cwd and PYTHONPATH first: that tree's packages win over the venv's editable install.
            command = [py, "-m", "services.gateway"]
            if name == "new" and os.environ.get("PP_GATEWAY_WRAPPER"):  # e.g. a cProfile wrapper
                command = [py, os.environ["PP_GATEWAY_WRAPPER"]]
            self._spawn(name, command, cwd=tree, env={
                "PYTHONPATH": str(tree),
                "PROMPTPULSE_DEPLOYMENTS_DIR": deployments,
                "PROMPTPULSE_KAFKA__TOPIC_PREFIX": self.prefix,
                "PROMPTPULSE_GATEWAY__PORT": port[name],
                "PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_DIR": str(self.work / f"spool-{name}"),
                "PROMPTPULSE_GATEWAY__PROVISION_DEMO_KEY": "false",
                **(self.new_env if name == "new" else {})})
        async with aiohttp.ClientSession() as session:
            for name in self.urls:
                probe = self._probe(name)
                if probe is None:
                    continue
                url, body = probe
                await harness.wait_until_answers(session, "POST", url, json=body,
                                                 headers={"Authorization": f"Bearer {self.key}"},
                                                 failed=f"{name} did not come up; see {self.work}/{name}.log")

    def _start_servers(self, py: str, port: dict[str, str]) -> str:
        """Starts the servers the gateways call (SERVERS); returns the deployments folder."""
        self._spawn("direct", [py, str(BENCH / "proxy_overhead.py"), "--upstream", port["direct"]], {}, cwd=REPO)
        self._spawn("bare", [py, str(BENCH / "proxy_overhead.py"), "--proxy", port["bare"], self.urls["direct"]],
                    {}, cwd=REPO)
        deployments, self.key = po.proxy_deployments(self.work, self.urls["direct"])
        return str(deployments)

    def _probe(self, name: str) -> tuple[str, dict[str, object]] | None:
        """The request that answers 200 once ``name`` is up (None: not waited for)."""
        return self.urls[name] + "/v1/chat/completions", {"model": po.MODEL, "messages": []}

def measure(gateways: Gateways, modes: list[str], kinds: list[str], args: argparse.Namespace) -> None:
    scripts = {kind: po.lua_script(gateways.work, gateways.key, kind) for kind in kinds}
    for mode in modes:  # warm: pools, lazy imports, first spans and events
        for kind in kinds:
            harness.run_wrk(gateways.urls[mode] + po.KINDS[kind][0], scripts[kind], args.clients, seconds=1)
    # (meter, mode, kind) -> CPU ms per request, one a round; the meters (harness.CPU_METERS): cpu
    # (all threads), main (the event loop's thread alone), system (in the kernel: sockets, epoll)
    ms: dict[tuple[str, str, str], list[float]] = {}
    for round_number in range(args.rounds):
        for kind in kinds:
            # new and old swap places every round and never run twice in a row (a process that
            # has just run finds the caches warm), each following bare as often as the other.
            order = modes if round_number % 2 == 0 else [modes[0], *reversed(modes[1:])]
            for mode in order:
                found = harness.wrk_cpu_per_request(gateways.procs[mode].pid, gateways.urls[mode] + po.KINDS[kind][0],
                                                    scripts[kind], args.clients, args.seconds, f"{mode} {kind}")
                for meter, value in found.items():
                    ms.setdefault((meter, mode, kind), []).append(value)
    load = os.getloadavg()
    print(f"\ngateway CPU per proxied request, {args.rounds} alternating rounds of {args.seconds} s at "
          f"{args.clients} clients (load average {load[0]:.2f}); median over rounds, ms")
    print("| call | " + " | ".join(modes) + (" | new/old" if "old" in modes else "") + " | new/bare |")
    print("|---|" + "---:|" * (len(modes) + ("old" in modes) + 1))
    for kind in kinds:
        med = {mode: statistics.median(ms[("cpu", mode, kind)]) for mode in modes}
        cells = [f"{med[m]:.3f}" for m in modes]
        if "old" in modes:
            cells.append(harness.paired_ratio(ms[("cpu", "new", kind)], ms[("cpu", "old", kind)]))
        cells.append(f"{med['new'] / med['bare']:.2f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print("of which in the kernel (stime: socket syscalls, epoll):")
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(f"{statistics.median(ms['system', m, kind]):.3f}" for m in modes) + " |")
    print("of which the event loop's thread (the rest: span export, Kafka client threads):")
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(f"{statistics.median(ms['main', m, kind]):.3f}" for m in modes) + " |")
    # Wall-clock: noise on a shared machine, but the two gateways ran seconds apart in each round.
    print("wrk's p50 latency (ms; at 1 client the gateway's critical path shows here), new/old paired:")
    for kind in kinds:
        cells = [f"{statistics.median(ms['p50', m, kind]):.3f}" for m in modes]
        if "old" in modes:
            cells.append(harness.paired_ratio(ms[("p50", "new", kind)], ms[("p50", "old", kind)]))
        print(f"| {kind} | " + " | ".join(cells) + " |")


def profile(gateways: Gateways, args: argparse.Namespace) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    script = po.lua_script(gateways.work, gateways.key, args.kind)
    url = gateways.urls["new"] + po.KINDS[args.kind][0]
    harness.run_wrk(url, script, args.clients, seconds=1)
    fmt = "speedscope" if args.out.endswith(".json") else ("raw" if args.out.endswith(".txt") else "flamegraph")
    recorder = subprocess.Popen([spy, "record", "--pid", str(gateways.procs["new"].pid), "--duration",
                                 str(args.profile), "--rate", "500", "--format", fmt, "--output", args.out,
                                 *(["--native"] if args.native else []), "--gil", "--nonblocking"])
    time.sleep(1)
    harness.run_wrk(url, script, args.clients, seconds=args.profile)
    recorder.wait(timeout=120)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a git ref to compare with (its gateway runs as 'old')")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--kinds", default="json,stream", help="of " + ", ".join(po.KINDS))
    parser.add_argument("--new-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the new gateway only (what does X cost?)")
    parser.add_argument("--profile", type=int, default=0, help="py-spy the new gateway for this many seconds")
    parser.add_argument("--kind", default="json", help="the call --profile drives")
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--out", default="/tmp/gateway-profile.txt")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="pp-proxy-cpu-") as tmp:
        work = Path(tmp)
        trees = harness.gateway_trees(work, args.baseline)
        gateways = Gateways(work, trees)
        gateways.new_env = dict(item.split("=", 1) for item in args.new_env)
        try:
            await gateways.start()
            if args.profile:
                profile(gateways, args)
            else:
                measure(gateways, ["bare", *trees], args.kinds.split(","), args)
        finally:
            await gateways.stop()


if __name__ == "__main__":
    asyncio.run(main())
