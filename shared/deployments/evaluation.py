"""A deployment's ``evaluation`` section (what the processor judges, with which judge) and its
``column_mapping`` (which flow input or output plays each role the judges read).

Apart from schema.py, which ties the sections of a deployment together: these are the parts the
processor reads to judge, and the checks between them and the rest of the deployment (a metric's
columns, a rubric's variables) stay in schema.py's Deployment.problems().
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator, Field, PrivateAttr

from shared.deployments.base import (
    COLUMNS,
    CONNECTION_NAME_PATTERN,
    Column,
    ConfigModel,
    Count,
    Metric,
    Number,
)
from shared.deployments.errors import Loc
from shared.deployments.evaluators import EvaluatorConfig


def _column_reference(value: Any) -> Any:
    # Accept prompt flow's reference syntax too: ${inputs.question} means inputs.question.
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1].strip()
    return value


ColumnReference = Annotated[
    str,
    BeforeValidator(_column_reference),
    Field(pattern=r"^(inputs|outputs)\.[A-Za-z_][A-Za-z0-9_]*$"),
]


class Fields(Protocol):
    """A request's inputs or outputs, read by name: a dict, or a view that converts only the
    fields asked for (the processor's StructFields)."""

    def get(self, name: str, /) -> Any: ...


class ColumnMapping(ConfigModel):
    """Which flow input or output plays each role the judges know."""

    question: ColumnReference | None = None
    answer: ColumnReference | None = None
    context: ColumnReference | None = None
    ground_truth: ColumnReference | None = None

    def source(self, column: Column) -> tuple[Literal["inputs", "outputs"], str] | None:
        """``("inputs", "question")`` for a mapped column, None for an unmapped one."""
        if column not in COLUMNS:
            raise ValueError(f"{column!r} is not one of {', '.join(COLUMNS)}")
        reference = getattr(self, column)
        if reference is None:
            return None
        side, _, name = reference.partition(".")
        return ("inputs" if side == "inputs" else "outputs"), name

    def value(self, column: Column, inputs: Fields, outputs: Fields) -> Any:
        """The column's value in one request, or None when unmapped or absent."""
        where = self.source(column)
        if where is None:
            return None
        side, name = where
        return (inputs if side == "inputs" else outputs).get(name)


class Judge(ConfigModel):
    """The LLM that scores sampled requests."""

    connection: str = Field(pattern=CONNECTION_NAME_PATTERN)
    model: str = Field(min_length=1, max_length=200)
    token_budget_per_hour: Count | None = Field(1_000_000, ge=1)
    combined_call: bool = False


class Evaluation(ConfigModel):
    """What the processor judges for this deployment: built-in metrics (``metrics``, the short
    form of ``evaluators`` entries of kind builtin) and the deployment's own evaluators."""

    metrics: list[Metric] = Field(default_factory=list)
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)
    sampling_rate: Number = Field(0.10, ge=0, le=1)
    judge: Judge

    _builtins: list[EvaluatorConfig] = PrivateAttr(default_factory=list)

    def _complete(self) -> None:
        self._builtins = [EvaluatorConfig(name=metric, kind="builtin") for metric in self.metrics]
        if self.judge.combined_call:
            for evaluator in self.all_evaluators():
                evaluator.set_combined()

    def all_evaluators(self) -> list[EvaluatorConfig]:
        """Every evaluator: the ``metrics`` short forms first, then ``evaluators`` in order."""
        return [*self._builtins, *self.evaluators]

    def evaluator(self, name: str) -> EvaluatorConfig | None:
        return next((e for e in self.all_evaluators() if e.name == name), None)

    def metric_names(self) -> list[str]:
        """Every metric judged: each evaluator's name, or ``<evaluator>.<output>`` of a flow."""
        return [metric for evaluator in self.all_evaluators() for metric in evaluator.metrics()]

    def evaluator_of(self, metric: str) -> EvaluatorConfig | None:
        """The evaluator that emits ``metric``."""
        return next((e for e in self.all_evaluators() if metric in e.metrics()), None)

    def problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = []
        if not self.metrics and not self.evaluators:
            found.append((("metrics",), "needs at least 1 item(s) here or in evaluators"))
        seen: set[str] = set()
        for index, metric in enumerate(self.metrics):
            if metric in seen:
                found.append((("metrics", index), f"{metric} is listed twice"))
            seen.add(metric)
        for index, evaluator in enumerate(self.evaluators):
            if evaluator.name in seen:
                found.append((("evaluators", index, "name"), f"{evaluator.name} is listed twice"))
            seen.add(evaluator.name)
        return found
