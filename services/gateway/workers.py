"""``promptpulse gateway --workers N``: one gateway process per core, all on one port.

The supervisor (this process) starts N workers (``python -m services.gateway`` with
``PROMPTPULSE_GATEWAY__WORKER_INDEX`` set), each a whole gateway binding the same address with
``SO_REUSEPORT``: the kernel spreads connections over them, no process sits in front, so the
hot path is a single process's as before. The supervisor only watches:

- a worker that dies without being asked is started again with the same index, after a
  back-off (shared/retry.py): it takes its predecessor's spool folder (``<spool_dir>/worker-<i>``)
  and drains what was left in it, so a crash loses no admitted event;
- SIGTERM or SIGINT is passed to every worker, which shuts down as a single gateway does
  (in-flight requests finished, events flushed or spooled); the supervisor exits when all have.

What a worker shares with the others, and what it does not:

- ``/metrics``: any worker answers a scrape with every worker's series, each labelled
  ``worker``: it reads the others over private Unix sockets in the spool folder
  (services/gateway/worker_metrics.py), so one scrape target sees the whole gateway;
- rate limits are per worker (as they are per process without workers): a key whose
  connections spread over N workers may reach up to N times its per-minute limit;
- deployments, keys and reloads: each worker loads the same folder; SIGHUP to the supervisor is
  passed to every worker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.gateway.settings import GatewaySettings
from shared.retry import Backoff

log = logging.getLogger(__name__)

WORKER_INDEX_VARIABLE = "PROMPTPULSE_GATEWAY__WORKER_INDEX"
WORKERS_VARIABLE = "PROMPTPULSE_GATEWAY__WORKERS"


def worker_spool(spool_dir: Path, index: int) -> Path:
    return spool_dir / f"worker-{index}"


def worker_socket(spool_dir: Path, index: int) -> Path:
    return spool_dir / f"worker-{index}.sock"


class Supervisor:
    def __init__(self, settings: GatewaySettings, count: int) -> None:
        self._settings = settings
        self._count = count
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._backoff = {index: Backoff(initial=0.5, cap=30.0) for index in range(count)}
        self._stopping = False

    def _start(self, index: int) -> None:
        env = {**os.environ, WORKER_INDEX_VARIABLE: str(index), WORKERS_VARIABLE: str(self._count)}
        process = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env)
        self._workers[index] = process
        log.info("gateway worker started", extra={"worker": index, "pid": process.pid})

    def _signal_all(self, signum: int) -> None:
        for process in self._workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    def _on_stop(self, signum: int, _frame: object) -> None:
        self._stopping = True
        self._signal_all(signal.SIGTERM)

    def _on_hup(self, signum: int, _frame: object) -> None:
        self._signal_all(signal.SIGHUP)

    def run(self) -> int:
        spool = self._settings.gateway.publisher.spool_dir
        spool.mkdir(parents=True, exist_ok=True)
        spool.chmod(0o700)  # worker sockets and spools live here
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        for index in range(self._count):
            self._start(index)
        due: dict[int, float] = {}
        while True:
            for index, process in list(self._workers.items()):
                code = process.poll()
                if code is None or index in due:
                    continue
                if self._stopping:
                    continue
                wait = self._backoff[index].next()
                log.warning(
                    "gateway worker exited unexpectedly; starting it again",
                    extra={"worker": index, "pid": process.pid, "exit_code": code, "retry_in_s": round(wait, 2)},
                )
                due[index] = time.monotonic() + wait
            for index, when in list(due.items()):
                if self._stopping:
                    due.pop(index)
                elif time.monotonic() >= when:
                    due.pop(index)
                    self._start(index)
            if self._stopping and all(p.poll() is not None for p in self._workers.values()):
                codes = [p.returncode for p in self._workers.values()]
                log.info("gateway workers stopped", extra={"exit_codes": codes})
                return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
            time.sleep(0.2)


def run_workers(settings: GatewaySettings, count: int) -> int:
    if settings.gateway.port == 0:
        raise ValueError("--workers needs a fixed port (PROMPTPULSE_GATEWAY__PORT), not 0")
    return Supervisor(settings, count).run()
