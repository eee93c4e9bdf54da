"""A second, private Kafka broker for tests that stop, kill or restart the broker.

The shared broker on 127.0.0.1:9092 serves every other test; a fault test that stopped it would
break them. This one runs from the same cached jars (deploy/local/kafka.sh) with its own ports and
data folder, so it can be stopped and started at will. Data survives `stop`/`kill` + `start`,
as a real broker's would.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO_DIR / "deploy" / "local" / "kafka.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateKafka:
    def __init__(self, state_dir: Path) -> None:
        self.port = _free_port()
        self.controller_port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        shared_local = Path(os.environ.get("PROMPTPULSE_LOCAL_DIR", REPO_DIR / ".local"))
        self._env = {
            **os.environ,
            "PROMPTPULSE_LOCAL_DIR": str(state_dir),
            "PROMPTPULSE_LOCAL_KAFKA_JARS": str(shared_local / "kafka" / "jars"),
            "PROMPTPULSE_LOCAL_KAFKA_PORT": str(self.port),
            "PROMPTPULSE_LOCAL_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "PROMPTPULSE_LOCAL_KAFKA_HEAP": "256m",
        }
        self.log_file = state_dir / "logs" / "kafka.log"

    def _run(self, command: str) -> None:
        subprocess.run(["bash", str(KAFKA_SH), command], env=self._env, check=True, timeout=180)

    def start(self) -> None:
        """Start (or restart) and return once the broker answers metadata requests."""
        self._run("up")

    def stop(self) -> None:
        """Graceful stop (SIGTERM, controlled shutdown)."""
        self._run("down")

    def kill(self) -> None:
        """SIGKILL: no controlled shutdown, as in a crash."""
        self._run("kill")
