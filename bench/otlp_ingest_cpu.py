"""CPU per OTLP export in the gateway's ``POST /v1/traces`` work, without HTTP or Kafka.

What the route does with an accepted body, timed piece by piece with ``time.process_time``
(this process's CPU, so other load on the machine moves it little):

- ``parse``: ``parse_export`` (protobuf's parser, or JSON's plus the hex ids rewritten);
- ``spans_of``: every span converted to Python values (ids, times, attributes, events), which
  the route ran only to validate the export and count its spans before ``restamp`` (until
  2026-12-06; the function stays for tests and tools);
- ``restamp``: ``per_trace_records``, the walk that cuts the export into one record per trace,
  drops and stamps attributes (and, since it validates ids, times and depth itself, the route's
  only pass over the spans).

The exports are what real applications send: opentelemetry-sdk spans encoded by its OTLP
encoder (tests/support/otlp_apps.py), an openai-v2 style chat with its HTTP client span and an
Agent Framework style agent tree per trace, conversation texts of a few hundred characters.

With ``--baseline REV`` the route as it was at git revision REV runs in the same rounds:
``parse`` + ``spans_of`` + REV's ``restamp.py`` (loaded from git beside the current one), so the
ratio of the two routes' CPU is measured under the same load.

Usage: ``python bench/otlp_ingest_cpu.py [--traces 50] [--rounds 5] [--seconds 2]
[--baseline 1ad8e18]``. Prints, asserts nothing; about 20 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.gateway.otlp.restamp import per_trace_records  # noqa: E402
from shared.otlp_ingest.decode import PROTOBUF, parse_export, spans_of  # noqa: E402
from tests.support.otlp_apps import App, agent_tree, current_chat, export_bytes, proxied_chat  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LONG = "Parcels ship within two days from the warehouse nearest to you; " * 6


def build_export(traces: int) -> bytes:
    app = App(service="parcel-support")
    for index in range(traces):
        if index % 3 == 0:
            agent_tree(app)
        elif index % 3 == 1:
            proxied_chat(app)
        else:
            current_chat(app, answer=LONG)
    return export_bytes(app.spans())


def _source_at(revision: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def _imported(name: str, source: str) -> ModuleType:
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def restamp_at(revision: str) -> ModuleType:
    """services/gateway/otlp/restamp.py as it was at ``revision``, imported under another name,
    with that revision's shared/otlp_ingest/texts.py: names it imported from there are gone now."""
    texts_name = "shared.otlp_ingest.texts"
    current = sys.modules[texts_name]
    sys.modules[texts_name] = _imported("texts_baseline", _source_at(revision, "shared/otlp_ingest/texts.py"))
    try:
        return _imported("restamp_baseline", _source_at(revision, "services/gateway/otlp/restamp.py"))
    finally:
        sys.modules[texts_name] = current


def cpu_per_call(work: Callable[[], object], seconds: float) -> float:
    """Milliseconds of this process's CPU per call, over about ``seconds`` of calls."""
    work()  # warm
    calls = 0
    start = time.process_time()
    while True:
        work()
        calls += 1
        used = time.process_time() - start
        if used >= seconds:
            return used / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--baseline", help="a git revision whose route runs beside this one")
    args = parser.parse_args()
    body = build_export(args.traces)
    export = parse_export(body, PROTOBUF)
    spans = len(spans_of(export))

    def restamp() -> object:
        return per_trace_records(export, deployment="demo", variant_of=lambda resource: "",
                                 keeps_texts=lambda trace_id: True, max_record_bytes=1 << 20)

    pieces: dict[str, Callable[[], object]] = {
        "parse": lambda: parse_export(body, PROTOBUF),
        "spans_of": lambda: spans_of(export),
        "restamp": restamp,
    }
    if args.baseline:
        baseline = restamp_at(args.baseline)

        def baseline_restamp() -> object:
            return baseline.per_trace_records(export, deployment="demo", variant_of=lambda resource: "",
                                              keeps_texts=lambda trace_id: True, max_record_bytes=1 << 20)

        pieces["baseline_restamp"] = baseline_restamp
    figures: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(args.rounds):  # alternating, so a change in the machine's load hits every piece
        for name, work in pieces.items():
            figures[name].append(cpu_per_call(work, args.seconds / len(pieces)))
    medians = {name: statistics.median(values) for name, values in figures.items()}
    route = medians["parse"] + medians["restamp"]
    report: dict[str, object] = {
        "export_bytes": len(body), "spans": spans, "traces": args.traces,
        "cpu_ms_per_export": {name: round(value, 3) for name, value in medians.items()},
        "cpu_us_per_span": {name: round(value * 1000 / spans, 2) for name, value in medians.items()},
        "route_ms": round(route, 3),
    }
    if args.baseline:
        before = medians["parse"] + medians["spans_of"] + medians["baseline_restamp"]
        report["baseline_route_ms"] = round(before, 3)
        report["route_vs_baseline"] = round(route / before, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
