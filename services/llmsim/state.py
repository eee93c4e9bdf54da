"""Everything llmsim changes at run time, in one object the app holds under a typed key."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.llmsim.drift import DriftBoard
from services.llmsim.faults import FaultBoard
from services.llmsim.settings import LatencyModel, LlmsimSection


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SimulatorState:
    section: LlmsimSection
    latency: LatencyModel
    faults: FaultBoard
    drift: DriftBoard
    judge_echo: bool
    rng: random.Random
    started_at: datetime
    # Set when the server begins shutting down, so hanging and streaming handlers end at once
    # instead of holding shutdown for their full delay.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    counters: Counter[str] = field(default_factory=Counter)
    streams_in_flight: int = 0

    @classmethod
    def from_section(cls, section: LlmsimSection) -> SimulatorState:
        rng = random.Random(section.seed)
        started_at = utc_now()
        return cls(
            section=section,
            latency=section.latency,
            faults=FaultBoard(configured=section.faults, rng=rng),
            drift=DriftBoard(schedule=list(section.drift_schedule), started_at=started_at),
            judge_echo=section.judge_echo,
            rng=rng,
            started_at=started_at,
        )

    def reset(self) -> None:
        """Back to the configured behaviour (counters and the drift clock keep running)."""
        self.latency = self.section.latency
        self.faults.clear()
        self.drift.clear()
        self.judge_echo = self.section.judge_echo

    def snapshot(self) -> dict[str, object]:
        now = utc_now()
        return {
            "simulator": "llmsim",
            "started_at": self.started_at.isoformat(),
            "uptime_seconds": round((now - self.started_at).total_seconds(), 3),
            "latency": self.latency.model_dump(),
            "faults": self.faults.snapshot(),
            "drift": self.drift.snapshot(now),
            "judge": {"echo": self.judge_echo},
            "answer_tokens": self.section.answer_tokens,
            "streams_in_flight": self.streams_in_flight,
            "counters": dict(sorted(self.counters.items())),
        }
