"""From a joined request and response to the judge calls to make and the metrics that do not apply.

Each metric reads fixed columns (shared.deployments.METRIC_COLUMNS), taken from the request's
inputs and the response's outputs through the deployment's column mapping. A metric whose
columns are missing or empty in this request is *not applicable* (an outcome of its own, not an
error: a question without context cannot be grounded in it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.processor.evaluation.kinds.builtin.prompts import (
    combined_messages,
    combined_prompt_version,
    prompt_version,
    single_metric_messages,
)
from services.processor.evaluation.protocol import column_text
from shared.deployments import METRIC_COLUMNS, ColumnMapping
from shared.deployments.schema import Fields


@dataclass(frozen=True)
class NotApplicable:
    metric: str
    reason: str


@dataclass(frozen=True)
class JudgeCallPlan:
    """One call to the judge: one metric, or several when the deployment combines them."""

    metrics: tuple[str, ...]
    messages: list[dict[str, str]]
    prompt_versions: dict[str, str]
    # The texts sent for judging, so the parser can ignore any copy of them in the reply.
    judged: tuple[str, ...]

    @property
    def combined(self) -> bool:
        return len(self.metrics) > 1


@dataclass(frozen=True)
class EvaluationPlan:
    calls: tuple[JudgeCallPlan, ...]
    not_applicable: tuple[NotApplicable, ...]


def plan_evaluation(
    metrics: Sequence[str],
    mapping: ColumnMapping,
    inputs: Fields,
    outputs: Fields,
    *,
    combined: bool = False,
    max_chars: int = 16_000,
) -> EvaluationPlan:
    texts: dict[str, str | None] = {}
    applicable: list[str] = []
    not_applicable: list[NotApplicable] = []
    for metric in metrics:
        missing = []
        for column in METRIC_COLUMNS[metric]:
            if column not in texts:
                texts[column] = column_text(mapping.value(column, inputs, outputs))
            if texts[column] is None:
                missing.append(column)
        if missing:
            reason = f"no {' or '.join(missing)} in this request"
            not_applicable.append(NotApplicable(metric, reason))
        else:
            applicable.append(metric)
    calls: list[JudgeCallPlan] = []
    if combined and len(applicable) > 1:
        columns = _columns(applicable, texts)
        calls.append(
            JudgeCallPlan(
                metrics=tuple(applicable),
                messages=combined_messages(applicable, columns, max_chars=max_chars),
                prompt_versions={m: combined_prompt_version(m) for m in applicable},
                judged=tuple(columns.values()),
            )
        )
    else:
        for metric in applicable:
            columns = _columns([metric], texts)
            calls.append(
                JudgeCallPlan(
                    metrics=(metric,),
                    messages=single_metric_messages(metric, columns, max_chars=max_chars),
                    prompt_versions={metric: prompt_version(metric)},
                    judged=tuple(columns.values()),
                )
            )
    return EvaluationPlan(calls=tuple(calls), not_applicable=tuple(not_applicable))


def _columns(metrics: Sequence[str], texts: Mapping[str, str | None]) -> dict[str, str]:
    wanted = {column for metric in metrics for column in METRIC_COLUMNS[metric]}
    return {column: text for column, text in texts.items() if column in wanted and text is not None}
