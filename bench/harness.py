"""What the gateway benches share (proxy_overhead, proxy_cpu, flow_cpu, gateway_overhead).

Free ports; the processes a bench starts (each logging to its own file) and the Kafka topics
under the bench's own prefix; waiting for a server to answer; the bare aiohttp pass-through
proxy (the floor of any aiohttp proxy); CPU time and memory of a process from ``/proc``; wrk
runs (a C load generator: a Python client saturates before the servers it measures) and their
figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def checkout(ref: str, into: Path) -> Path:
    """The tree of ``ref`` as plain files (git archive: no worktree to clean up)."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def gateway_trees(work: Path, baseline: str | None) -> dict[str, Path]:
    """The source trees to run gateways from: this one (``new``) and, with a baseline ref, that
    commit's (``old``)."""
    trees = {"new": REPO}
    if baseline:
        trees["old"] = checkout(baseline, work / "baseline")
    return trees


# ---- the processes a bench starts

class Processes:
    """Processes started for a bench, each logging to ``work/NAME.log``, and the gateway's Kafka
    topics under a prefix of the bench's own (created by :meth:`create_topics`, deleted by
    :meth:`stop`)."""

    def __init__(self, work: Path, prefix: str) -> None:
        self.work = work
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.prefix = f"{prefix}{uuid4().hex[:8]}."

    def _spawn(self, name: str, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(args, cwd=cwd, env={**os.environ, **env}, stdout=log,
                                            stderr=subprocess.STDOUT)

    def _topic_names(self) -> list[str]:
        from shared.settings import KafkaSettings
        from shared.topics import Topics

        topics = Topics.from_settings(KafkaSettings(topic_prefix=self.prefix))
        return [topics.inference, topics.tokens, topics.feedback, topics.spans]

    async def create_topics(self) -> None:
        from shared.settings import KafkaSettings
        from shared.topics import ensure_topics

        await ensure_topics(KafkaSettings(topic_prefix=self.prefix, partitions=3), self._topic_names())

    async def stop(self) -> None:
        from shared.settings import KafkaSettings
        from shared.topics import delete_topics

        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await delete_topics(KafkaSettings(), self._topic_names())


async def wait_until_answers(session: aiohttp.ClientSession, method: str, url: str, *, ok: frozenset[int] = frozenset({200}),
                             json: object = None, headers: dict[str, str] | None = None, tries: int = 300,
                             failed: str) -> None:
    """Asks ``url`` every 0.1 s until it answers with a status in ``ok``; else exits with ``failed``."""
    for _ in range(tries):
        try:
            async with session.request(method, url, json=json, headers=headers) as resp:
                if resp.status in ok:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(failed)


# ---- what the gateways serve

def write_deployments(work: Path, connection: str, base_url: str, deployment: dict[str, object]) -> tuple[Path, str]:
    """A deployments folder (``work/deployments``) with one ``openai_compatible`` connection to
    ``base_url`` (its ``/v1``) and the deployment ``bench`` (``deployment``: its fields besides
    name and keys); returns the folder and the deployment's API key."""
    import yaml

    from shared.apikeys import new_api_key_record

    folder = work / "deployments"
    folder.mkdir()
    (folder / "connections.yaml").write_text(yaml.safe_dump({"connections": {connection: {
        "type": "openai_compatible", "base_url": base_url + "/v1", "api_key": "none"}}}))
    key, record = new_api_key_record("bench")
    (folder / "bench.yaml").write_text(yaml.safe_dump({
        "name": "bench", **deployment, "api_keys": [record.model_dump(mode="json", exclude_none=True)]}))
    return folder, key


def write_answer_flow(work: Path, model: str, connection: str) -> Path:
    """A flow of one llm node (``work/flow``) answering ``question`` with ``model`` on ``connection``
    in at most 40 tokens."""
    flow = work / "flow"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text(f"""\
inputs:
  question: {{type: string}}
outputs:
  answer: {{type: string, reference: "${{answer.output}}"}}
nodes:
- name: answer
  type: llm
  source: {{type: code, path: answer.jinja2}}
  inputs: {{model: {model}, max_tokens: 40, question: "${{inputs.question}}"}}
  connection: {connection}
  api: chat
""")
    (flow / "answer.jinja2").write_text("# user:\n{{question}}\n")
    return flow


# ---- the bare pass-through proxy (a bench's ``--proxy PORT UPSTREAM``)

def run_proxy(port: int, upstream: str) -> None:
    """Reads the body, posts it upstream on one shared ClientSession, relays status, content-type
    and chunks. No auth, no events: the floor of any aiohttp proxy."""
    async def forward(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        body = await request.read()
        async with session.post(upstream + request.path_qs, data=body,
                                headers={"Content-Type": "application/json"}) as up:
            response = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers["Content-Type"]})
            await response.prepare(request)
            async for piece in up.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_post("/v1/responses", forward)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---- a process's CPU time and memory, from /proc

def _stat_fields(path: str) -> list[str]:
    # After the command name (in parentheses, may hold spaces): field 3 (state) onwards.
    return Path(path).read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) the processes have used so far."""
    total = 0
    for pid in pids:
        fields = _stat_fields(f"/proc/{pid}/stat")
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (its event loop)."""
    fields = _stat_fields(f"/proc/{pid}/task/{pid}/stat")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_cpu(pid: int) -> float:
    """CPU seconds the process spent in the kernel (all threads)."""
    return int(_stat_fields(f"/proc/{pid}/stat")[12]) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its direct children (the gateway supervisor's workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(str(entry / "stat"))[1])
            except OSError:
                continue
            if parent == pid:
                children.append(int(entry.name))
    return [pid, *children]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# ---- the load: wrk, a Lua script per body

def wrk_script(path: Path, body: object, key: str) -> Path:
    """A wrk Lua script at ``path`` that POSTs ``body`` as JSON with the API key."""
    path.write_text(f"""wrk.method = "POST"
wrk.body = {json.dumps(json.dumps(body))}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
""")
    return path


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> dict[str, float]:
    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(number) * UNITS[unit]

    found = {f"p{p}": ms(re.search(rf"^\s+{p}%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
             for p in (50, 99)}
    found["requests"] = float(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    found["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    found["errors"] = float(bad.group(1) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return found


def run_wrk(url: str, script: Path, clients: int, seconds: int) -> dict[str, float]:
    """``url``: the server and the route (its Lua script's body is for that route)."""
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode != 0:
        raise SystemExit(f"wrk failed: {out.stderr}")
    return parse_wrk(out.stdout)


# What a wrk run's CPU per request is read from: all threads, the event loop's thread alone,
# in the kernel (syscalls: sockets, epoll).
CPU_METERS: dict[str, Callable[[int], float]] = {
    "cpu": lambda pid: cpu_seconds([pid]), "main": thread_cpu, "system": system_cpu}


def wrk_cpu_per_request(pid: int, url: str, script: Path, clients: int, seconds: int,
                        label: str) -> dict[str, float]:
    """One wrk run against the process ``pid``: CPU ms per request by each of CPU_METERS, and
    wrk's ``p50`` and ``p99`` latency (ms)."""
    before = {name: meter(pid) for name, meter in CPU_METERS.items()}
    found = run_wrk(url, script, clients, seconds)
    if found["errors"]:
        print(f"WARNING: {label}: {found['errors']:.0f} errors", file=sys.stderr)
    per_request = {name: 1000 * (meter(pid) - before[name]) / found["requests"] for name, meter in CPU_METERS.items()}
    return {**per_request, "p50": found["p50"], "p99": found["p99"]}


def paired_ratio(new: list[float], old: list[float]) -> str:
    """new/old paired per round (the two ran seconds apart), then the median and the range:
    steadier than a ratio of medians when the machine's load drifts."""
    ratios = sorted(n / o for n, o in zip(new, old, strict=True))
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
