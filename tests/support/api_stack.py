"""The live stack the API sweeps run against (tests/integration/test_api_sweep.py, the generated
requests; tests/integration/test_api_targeted_inputs.py, the inputs a generator rarely reaches).

tests/support/live_stack.py's stack (llmsim, aggregator, processor and gateway as real processes
on their own topics and database) with, beside the demo flow, a proxy deployment in front of
llmsim and an alert destination whose variables are unset. Each module registers the fixtures
for its own stack::

    proxy_key = pytest.fixture(scope="module")(api_stack.proxy_key)
    stack = pytest_asyncio.fixture(scope="module", loop_scope="module")(api_stack.stack)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml

from shared.apikeys import new_api_key_record
from tests.support.live_stack import LiveStack, StackOptions, live_stack

PROXY = "sweep-proxy"
PROXY_BODY_LIMIT = 1 << 20  # the proxy deployment's own limit (proxy.max_body_bytes)
SWEEP_DESTINATION = "sweep-hook"
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)


def proxy_key() -> tuple[str, dict[str, Any]]:
    """The proxy deployment's key and its record (written into the deployment)."""
    key, record = new_api_key_record(PROXY)
    return key, record.model_dump(mode="json", exclude_none=True)


async def stack(tmp_path_factory: pytest.TempPathFactory, proxy_key: tuple[str, dict[str, Any]]) -> AsyncIterator[LiveStack]:
    # Beside the demo flow, a proxy deployment in front of llmsim, so the gateway's document
    # lists (and the sweep reaches) the OpenAI-compatible routes (docs/proxy.md).
    proxy = {"name": PROXY, "type": "proxy", "proxy": {"connection": "llmsim", "max_body_bytes": PROXY_BODY_LIMIT},
             # Forced variants allowed, one on another model: the variant header is swept too.
             "variants": [{"id": "main", "weight": 1}, {"id": "next", "weight": 1, "model": "llmsim-next"}],
             "allow_forced_variant": True, "api_keys": [proxy_key[1]],
             "evaluation": {"metrics": ["relevance"], "sampling_rate": 0.0,
                            "judge": {"connection": "llmsim", "model": "llmsim-judge"}}}
    async with live_stack(tmp_path_factory.mktemp("sweep"), StackOptions(sampling_rate=0.1, deployment={
        # A destination whose variables are unset: its test route answers 200 (not delivered) with
        # no network call. Its name is the sweep's known path parameter.
        "destinations": [{"name": SWEEP_DESTINATION, "kind": "webhook", "url_env": "PP_SWEEP_UNSET_URL",
                          "secret_env": "PP_SWEEP_UNSET_SECRET"}]},
        files={f"{PROXY}.yaml": yaml.safe_dump(proxy)})) as running:
        yield running


async def assert_all_healthy(stack: LiveStack) -> None:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        for service in stack.services.values():
            assert service.running, f"{service.name} exited ({service.process.returncode}):\n{service.log_tail()}"
            async with http.get(f"{service.url}/healthz") as resp:
                assert resp.status == 200, f"{service.name} /healthz: {resp.status}"
