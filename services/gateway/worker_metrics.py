"""One scrape, every worker: ``/metrics`` of a gateway run with ``--workers N``.

prometheus_client's multiprocess mode shares only its own metric objects through files; our
series are read from live state at scrape time (shared/prometheus.py), which that mode cannot
see. So the worker that gets the scrape asks the others for their own text over their private
Unix sockets (in the spool folder, mode 0700), labels each worker's samples ``worker="<i>"``,
and writes all families once. A worker that does not answer within the timeout is left out and
counted in ``promptpulse_gateway_workers_unreachable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

LOCAL_PATH = "/metrics/worker"  # one worker's own series, asked over its Unix socket
TIMEOUT = aiohttp.ClientTimeout(total=2.0)


def labelled(text: str, worker: int) -> list[Metric]:
    families = []
    for family in text_string_to_metric_families(text):
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            copy.add_sample(sample.name, {**sample.labels, "worker": str(worker)}, sample.value, sample.timestamp)
        families.append(copy)
    return families


def merged(texts: Iterable[tuple[int, str]], unreachable: int, prefix: str) -> bytes:
    by_name: dict[str, Metric] = {}
    for worker, text in texts:
        for family in labelled(text, worker):
            known = by_name.get(family.name)
            if known is None:
                by_name[family.name] = family
            else:
                known.samples.extend(family.samples)
    gauge = Metric(f"{prefix}workers_unreachable", "Workers that did not answer this scrape.", "gauge")
    gauge.add_sample(f"{prefix}workers_unreachable", {}, float(unreachable))
    by_name[gauge.name] = gauge

    class _Collected:
        def collect(self) -> Iterable[Metric]:
            return list(by_name.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected())
    return generate_latest(registry)


async def _fetch(socket: Path) -> str | None:
    try:
        connector = aiohttp.UnixConnector(path=str(socket))
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session, \
                session.get(f"http://worker{LOCAL_PATH}") as response:
            if response.status != 200:
                return None
            return await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


async def every_worker(own: tuple[int, str], sockets: dict[int, Path], prefix: str) -> bytes:
    others = sorted(sockets)
    answers = await asyncio.gather(*(_fetch(sockets[index]) for index in others))
    texts = [own] + [(index, text) for index, text in zip(others, answers, strict=True) if text is not None]
    return merged(texts, sum(1 for text in answers if text is None), prefix)
