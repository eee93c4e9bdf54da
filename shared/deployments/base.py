"""The vocabulary and base model of the deployment schema (shared/deployments/schema.py, evaluation.py, proxy.py).

Every schema model derives from :class:`ConfigModel`: unknown keys are errors, and rules that
tie fields together live in ``problems()``, which returns (location, message) pairs so the
loader can name the exact field path in the file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

from shared.deployments.errors import Loc, field_path

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
VARIANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
MONITOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,126}$"
CONNECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

Metric = Literal["groundedness", "relevance", "coherence", "fluency", "similarity"]
Statistic = Literal[
    "average", "pass_rate", "tokens_per_hour", "cost_per_hour", "error_rate", "latency_p95"
]
Column = Literal["question", "answer", "context", "ground_truth"]
COLUMNS: tuple[Column, ...] = ("question", "answer", "context", "ground_truth")

METRICS: tuple[str, ...] = ("groundedness", "relevance", "coherence", "fluency", "similarity")
# The columns each judge needs; a metric whose columns are not all mapped could never be judged.
METRIC_COLUMNS: dict[str, tuple[Column, ...]] = {
    "groundedness": ("question", "answer", "context"),
    "relevance": ("question", "answer"),
    "coherence": ("question", "answer"),
    "fluency": ("answer",),
    "similarity": ("question", "answer", "ground_truth"),
}
# The version of each built-in judge's prompt (services/processor/evaluation/kinds/builtin/
# rubrics.py uses these): the evaluator version of a built-in metric. A combined call's prompt
# differs, so its scores carry the version with COMBINED_SUFFIX.
BUILTIN_PROMPT_VERSIONS: dict[str, str] = {metric: f"{metric}-v1" for metric in METRICS}
COMBINED_SUFFIX = "+combined-v1"
QUALITY_STATISTICS = frozenset({"average", "pass_rate"})
DEFAULT_SCORE_THRESHOLD = 3
DEFAULT_VARIANT_ID = "default"

# Validation context flag: nested models skip their cross-field checks and the loader runs
# them once on the whole deployment, so each problem is reported with its full field path.
DEFER_CHECKS = "promptpulse.defer_checks"
BASE_DIR = "promptpulse.base_dir"


def _no_bool(value: Any) -> Any:
    # YAML turns yes/no/true into booleans, and pydantic would read True as 1: a
    # `sampling_rate: yes` must be an error, not "judge everything".
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


Number = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]
Count = Annotated[int, BeforeValidator(_no_bool)]


class ConfigModel(BaseModel):
    """Base of every schema model: unknown keys are errors; cross-field rules in problems()."""

    model_config = ConfigDict(extra="forbid")

    def _complete(self) -> None:
        """Fill defaults that depend on other fields (runs before the checks)."""

    def problems(self) -> list[tuple[Loc, str]]:
        """This model's own cross-field problems, located relative to it."""
        return []

    def all_problems(self) -> list[tuple[Loc, str]]:
        """Problems of this model and every nested one, with full relative locations."""
        found: list[tuple[Loc, str]] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, ConfigModel):
                found += [((name, *loc), msg) for loc, msg in value.all_problems()]
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, ConfigModel):
                        found += [((name, index, *loc), msg) for loc, msg in item.all_problems()]
        return found + self.problems()

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> ConfigModel:
        self._complete()
        if info.context and info.context.get(DEFER_CHECKS):
            return self
        found = self.all_problems()
        if found:
            raise ValueError("; ".join(f"{field_path(loc)}: {msg}" for loc, msg in found))
        return self
