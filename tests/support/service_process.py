"""One service of a live stack (tests/support/live_stack.py) as a real process: ``python -m
services.KIND`` started from this checkout with its own environment and log file, waited for until
its /healthz answers, and signalled, killed, stopped or started again (the fault tests do)."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    """One running (or stopped) service process."""

    name: str  # e.g. "processor-1"
    kind: str  # llmsim | aggregator | processor | gateway
    port: int
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    async def start(self, within: float = 90.0) -> None:
        assert not self.running, f"{self.name} already runs"
        log = open(self.log_path, "ab")  # noqa: ASYNC230,SIM115  (a local file; the child holds it)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"services.{self.kind}", cwd=REPO, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            log.close()
        await self.wait_healthy(within)

    async def wait_healthy(self, within: float = 90.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process is not None and self.process.returncode is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.process.returncode} while starting:\n{self.log_tail()}")
                try:
                    async with session.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if loop.time() > deadline:
                    raise AssertionError(f"{self.name} not healthy within {within:.0f} s:\n{self.log_tail()}")
                await asyncio.sleep(0.2)

    def signal(self, signum: int) -> None:
        assert self.process is not None and self.running, f"{self.name} is not running"
        self.process.send_signal(signum)

    async def kill(self) -> int:
        """SIGKILL, and wait for the process to be gone."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, within: float = 60.0) -> int | None:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``within`` seconds)."""
        if not self.running:
            return self.process.returncode if self.process else None
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()
