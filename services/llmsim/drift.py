"""Quality drift per variant: a schedule from the settings, overridden at run time by the control API.

Which variant a request belongs to: the ``x-promptpulse-variant`` header, else ``metadata.variant``,
else ``variant=<name>`` (or ``variant:<name>``) inside the ``user`` field, else ``default``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.llmsim.settings import DriftStep

ALL_VARIANTS = "*"
DEFAULT_VARIANT = "default"
VARIANT_HEADER = "x-promptpulse-variant"

_USER_VARIANT = re.compile(r"(?:^|[\s;,&|])variant[=:]([\w.\-]+)")


def variant_of(
    headers: Mapping[str, str], metadata: Mapping[str, object] | None, user: str | None
) -> str:
    header = headers.get(VARIANT_HEADER, "").strip()
    if header:
        return header
    if metadata and isinstance(metadata.get("variant"), str) and metadata["variant"]:
        return str(metadata["variant"])
    if user:
        match = _USER_VARIANT.search(user)
        if match:
            return match.group(1)
    return DEFAULT_VARIANT


@dataclass
class DriftBoard:
    """Current drift level of each variant.

    An override set through the control API beats the schedule: the variant's own override
    first, then the ``*`` override. Without one, the schedule step that started last and applies
    to the variant (by name or ``*``) gives the level; before any step starts it is 0.
    """

    schedule: list[DriftStep]
    started_at: datetime
    overrides: dict[str, float] = field(default_factory=dict)

    def _start_of(self, step: DriftStep) -> datetime:
        if step.at is not None:
            return step.at
        return self.started_at + timedelta(seconds=step.after_seconds or 0.0)

    def set_level(self, variant: str, level: float | None) -> None:
        if level is None:
            self.overrides.pop(variant, None)
        else:
            self.overrides[variant] = level

    def clear(self) -> None:
        self.overrides.clear()

    def scheduled_level(self, variant: str, now: datetime) -> float:
        latest: tuple[datetime, int, float] | None = None
        for position, step in enumerate(self.schedule):
            if step.variant not in (variant, ALL_VARIANTS):
                continue
            start = self._start_of(step)
            if start <= now and (latest is None or (start, position) >= latest[:2]):
                latest = (start, position, step.level)
        return latest[2] if latest else 0.0

    def level(self, variant: str, now: datetime) -> float:
        if variant in self.overrides:
            return self.overrides[variant]
        if ALL_VARIANTS in self.overrides:
            return self.overrides[ALL_VARIANTS]
        return self.scheduled_level(variant, now)

    def snapshot(self, now: datetime) -> dict[str, object]:
        named = {step.variant for step in self.schedule} | set(self.overrides) | {DEFAULT_VARIANT}
        return {
            "levels": {name: self.level(name, now) for name in sorted(named)},
            "overrides": dict(self.overrides),
            "schedule": [
                {**step.model_dump(mode="json"), "starts_at": self._start_of(step).isoformat()}
                for step in self.schedule
            ],
        }
