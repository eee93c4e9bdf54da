"""``python -m services.processor`` (``promptpulse processor``): run one processor worker.

Runs until SIGTERM or SIGINT, then shuts down in order (services/processor/app.py) and flushes
telemetry last. Exit status: 0 after a clean stop, 1 when faust crashed, 2 for bad settings or
a missing deployments folder (the message names the variable or field). A deployment
file that does not load is logged with every problem and not judged; the others are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from services.processor.app import ProcessorService
from services.processor.settings import ProcessorSettings
from shared.deployments import DeploymentConfigError
from shared.entrypoint import LLM_CLIENT_LOGGERS, run_service
from shared.telemetry import setup_telemetry, shutdown_telemetry
from shared.topics import TopicError

log = logging.getLogger("services.processor")


async def run(settings: ProcessorSettings) -> int:
    telemetry = setup_telemetry("processor", settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        service = ProcessorService(settings)
        async with service:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if getattr(service.faust_app, "crashed", False):
                    log.error("faust crashed; stopping")
                    return 1
        return 0
    finally:
        shutdown_telemetry(telemetry)


def main() -> int:
    # faust and mode announce every service start at INFO (and the LLM clients every judge call).
    return run_service("processor", ProcessorSettings, lambda settings: asyncio.run(run(settings)),
                       quiet_loggers=("faust", "mode", *LLM_CLIENT_LOGGERS),
                       refusals=(DeploymentConfigError, TopicError))


if __name__ == "__main__":
    sys.exit(main())
