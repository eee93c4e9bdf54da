"""Monitors: the aggregator's initial watches over a deployment's figures.

Changes made through the aggregator's API are stored in Postgres and win over the file; the
aggregator validates them with the same :class:`Monitor` model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator

from shared.deployments.base import (
    DEFAULT_SCORE_THRESHOLD,
    ENV_NAME_PATTERN,
    METRICS,
    MONITOR_ID_PATTERN,
    QUALITY_STATISTICS,
    VARIANT_ID_PATTERN,
    ConfigModel,
    Count,
    Number,
    Statistic,
)
from shared.deployments.destinations import DESTINATION_NAME_PATTERN
from shared.deployments.errors import Loc
from shared.deployments.evaluators import METRIC_NAME_PATTERN

_DURATION_RE = re.compile(r"^\s*(\d{1,9})\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_SECONDS = 90 * 86400
SEVERITY_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"  # a plain label value: critical, warning, info, page...
DEFAULT_SEVERITY = "warning"


def parse_duration(value: Any) -> int:
    """``"5m"`` -> 300. Accepts ``<n>s|m|h|d`` or a whole number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like '5m', '1h' or '1d'")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration like '5m', '1h' or '1d'")


def format_duration(seconds: int) -> str:
    """300 -> ``"5m"``: the largest unit that divides the duration exactly."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def _whole_minutes(seconds: int) -> int:
    # Rollups are per minute and any window is a sum of minutes, so nothing finer is exact.
    if seconds < 60 or seconds % 60:
        raise ValueError(f"must be a whole number of minutes (at least 1m), got {seconds}s")
    if seconds > MAX_WINDOW_SECONDS:
        raise ValueError(f"must be at most {format_duration(MAX_WINDOW_SECONDS)}")
    return seconds


Duration = Annotated[int, BeforeValidator(parse_duration), AfterValidator(_whole_minutes)]


class Notification(ConfigModel):
    """Where a monitor's alerts go besides the alerts topic (which always gets them)."""

    # Names of the deployment's ``destinations``; None: all of them, []: none.
    destinations: list[Annotated[str, Field(pattern=DESTINATION_NAME_PATTERN)]] | None = Field(None, max_length=32)
    # The first form, kept for a release: a Slack-compatible body to one URL. The inline URL is
    # deprecated (a credential in the file; the aggregator warns at load): use a destination.
    webhook_url: SecretStr | None = None
    webhook_url_env: str | None = Field(None, pattern=ENV_NAME_PATTERN)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value.get_secret_value()):
            raise ValueError("must be an http:// or https:// URL")
        return value

    def problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = []
        if self.webhook_url is not None and self.webhook_url_env is not None:
            found.append((("webhook_url_env",), "set webhook_url or webhook_url_env, not both"))
        for index, name in enumerate(self.destinations or []):
            if name in (self.destinations or [])[:index]:
                found.append((("destinations", index), f"{name!r} is listed twice"))
        return found

    def resolve_webhook_url(self, environ: Mapping[str, str]) -> SecretStr | None:
        """The webhook URL, from the file or the named environment variable (None if unset)."""
        if self.webhook_url is not None:
            return self.webhook_url
        if self.webhook_url_env and environ.get(self.webhook_url_env):
            return SecretStr(environ[self.webhook_url_env])
        return None


class Monitor(ConfigModel):
    """One of the aggregator's initial monitors (changes made through its API win)."""

    id: str = Field(pattern=MONITOR_ID_PATTERN)
    variant: str | None = Field(None, pattern=VARIANT_ID_PATTERN)
    statistic: Statistic
    # A built-in metric, an evaluator's name or `<evaluator>.<output>` (checked against the
    # deployment's evaluation section by Deployment.problems()).
    metric: str | None = Field(None, pattern=METRIC_NAME_PATTERN)
    threshold: Number
    score_threshold: Count | None = Field(None, ge=1, le=5)
    window: Duration
    cadence: Duration | None = None
    min_samples: Count = Field(10, ge=1, le=2_147_483_647)  # a PostgreSQL integer column
    fire_only_when_ci_below: bool = False
    # For Alertmanager: routing by severity, and where the engineer paged should start reading.
    severity: str | None = Field(None, pattern=SEVERITY_PATTERN)
    runbook_url: str | None = Field(None, max_length=2048)
    notification: Notification = Field(default_factory=Notification)

    @field_validator("runbook_url")
    @classmethod
    def _runbook_http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+\S*$", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def scope(self) -> Literal["deployment", "variant"]:
        return "deployment" if self.variant is None else "variant"

    @property
    def violated_when(self) -> Literal["below", "above"]:
        """Quality is bad when low; cost, errors and latency when high."""
        return "below" if self.statistic in QUALITY_STATISTICS else "above"

    @property
    def effective_score_threshold(self) -> int:
        return DEFAULT_SCORE_THRESHOLD if self.score_threshold is None else self.score_threshold

    def is_violation(self, value: float) -> bool:
        return value < self.threshold if self.violated_when == "below" else value > self.threshold

    def _complete(self) -> None:
        if self.cadence is None:
            self.cadence = self.window  # tumbling windows unless asked otherwise

    def problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = []
        stat, quality = self.statistic, self.statistic in QUALITY_STATISTICS
        if quality and self.metric is None:
            found.append((("metric",), f"required for statistic {stat}"))
        if not quality and self.metric is not None:
            found.append((("metric",), f"must be omitted for statistic {stat}"))
        bounds = {"average": (1.0, 5.0), "pass_rate": (0.0, 1.0), "error_rate": (0.0, 1.0)}
        low, high = bounds.get(stat, (0.0, math.inf))
        # An average of another evaluator's metric lives on that evaluator's scale, which only
        # the deployment knows: Deployment.problems() checks it there.
        own_scale = stat == "average" and self.metric is not None and self.metric not in METRICS
        if not own_scale and (not low <= self.threshold <= high or (high == math.inf and self.threshold <= 0)):
            rule = f"between {low:g} and {high:g}" if high != math.inf else "> 0"
            found.append((("threshold",), f"must be {rule} for statistic {stat}"))
        if self.score_threshold is not None and stat != "pass_rate":
            found.append((("score_threshold",), "only applies to statistic pass_rate"))
        if self.fire_only_when_ci_below and not quality:
            found.append(
                (("fire_only_when_ci_below",), "only applies to sampled statistics (average, pass_rate)")
            )
        if self.variant is not None and stat in ("tokens_per_hour", "cost_per_hour"):
            found.append(
                (("variant",), f"{stat} is counted per deployment and model, not per variant; omit variant")
            )
        if self.cadence is not None and self.cadence > self.window:
            found.append((("cadence",), "must not be longer than window (minutes would go unwatched)"))
        return found
