"""The deployment schema: one YAML file per deployment, read by every service.

The gateway reads the flow, variants, keys and redaction (and a proxy's ``proxy`` section,
proxy.py); the processor the ``evaluation`` section and the column mapping (evaluation.py); the
aggregator the initial ``monitors`` (monitors.py). Field-local
rules are pydantic constraints; rules that tie fields together live in each model's
``problems()`` (see base.py). docs/deployments.md describes every field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from shared.apikeys import ApiKeyRecord
from shared.deployments.base import (
    BASE_DIR,
    COLUMNS,
    DEFAULT_VARIANT_ID,
    FIELD_NAME_PATTERN,
    METRIC_COLUMNS,
    NAME_PATTERN,
    VARIANT_ID_PATTERN,
    ConfigModel,
    Number,
)
from shared.deployments.destinations import Destination
from shared.deployments.errors import Loc

# "X as X": the names the gateway and the processor import from here, defined since in
# evaluation.py and proxy.py, stay importable from here.
from shared.deployments.evaluation import ColumnMapping
from shared.deployments.evaluation import Evaluation as Evaluation
from shared.deployments.evaluation import Fields as Fields
from shared.deployments.evaluators import EvaluatorConfig
from shared.deployments.monitors import Monitor
from shared.deployments.proxy import NO_CONTEXT as NO_CONTEXT
from shared.deployments.proxy import PROXY_COLUMNS
from shared.deployments.proxy import SYSTEM_MESSAGE as SYSTEM_MESSAGE
from shared.deployments.proxy import Proxy as Proxy


def _relative_to(value: Path | None, info: ValidationInfo) -> Path | None:
    """A path written in a deployment file, relative to that file's folder."""
    base = (info.context or {}).get(BASE_DIR)
    if value is None or base is None or value.is_absolute():
        return value
    return (Path(base) / value).resolve()


def merge_values(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: mappings key by key (recursively), anything else replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


class Variant(ConfigModel):
    """One traffic variant of the deployment."""

    id: str = Field(pattern=VARIANT_ID_PATTERN)
    weight: Number = Field(1.0, ge=0, le=1_000_000)
    nodes: dict[str, Annotated[str, Field(pattern=VARIANT_ID_PATTERN)]] | None = Field(
        None,
        description="Flow node -> that node's variant id. Unset: every node of the flow's "
        "node_variants that has a variant with this id uses it, the others their default.",
    )
    init: dict[str, Any] | None = Field(
        None,
        description="This variant's init values over the deployment's init: a flex flow's per key, a "
        "prompty's model overrides mappings merged key by key.",
    )
    model: str | None = Field(
        None, min_length=1, max_length=256,
        description="Proxy deployments only: the upstream model (Azure: model deployment) this variant "
        "calls instead of the one the client names. Unset: the client's model.",
    )
    flow: Path | None = Field(
        None,
        description="A deployment-level variant: this variant runs another flow file (a prompty "
        "deployment's variant names another .prompty file). Unset: the deployment's flow.",
    )

    @field_validator("flow")
    @classmethod
    def _flow_relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _relative_to(value, info)

    def node_selection(self, node_variants: Mapping[str, Iterable[str]]) -> dict[str, str]:
        """Node -> variant id to run, for the flow's ``node_variants`` (node -> its variant ids).

        Nodes left out run their ``default_variant_id``.
        """
        if self.nodes is not None:
            return dict(self.nodes)
        return {node: self.id for node, ids in node_variants.items() if self.id in set(ids)}


FieldName = Annotated[str, Field(pattern=FIELD_NAME_PATTERN)]


class Redaction(ConfigModel):
    """Flow input and output fields replaced before they enter any event."""

    inputs: list[FieldName] = Field(default_factory=list)
    outputs: list[FieldName] = Field(default_factory=list)


class Deployment(ConfigModel):
    """One deployment: a flow behind an endpoint (or a proxy to an LLM), and how its quality is watched."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    type: Literal["flow", "proxy"] = "flow"
    flow: Path | None = None
    proxy: Proxy | None = None
    variants: list[Variant] = Field(
        default_factory=lambda: [Variant(id=DEFAULT_VARIANT_ID)], min_length=1
    )
    allow_forced_variant: bool = False
    init: dict[str, Any] | None = Field(
        None, description="A flex flow's init values: its entry class's __init__ arguments (docs/flows.md); "
        "a prompty's Prompty.load overrides ({model: {configuration: {connection: NAME}, parameters: {...}}})."
    )
    api_keys: list[ApiKeyRecord] = Field(default_factory=list)
    api_keys_file: Path | None = None
    column_mapping: ColumnMapping = Field(default_factory=ColumnMapping)
    redaction: Redaction = Field(default_factory=Redaction)
    evaluation: Evaluation | None = None
    monitors: list[Monitor] = Field(default_factory=list)
    # Where monitor alerts go directly (docs/alerting.md): every monitor's, unless it names some.
    destinations: list[Destination] = Field(default_factory=list, max_length=32)

    _source: Path | None = PrivateAttr(None)
    _inline_api_keys: list[ApiKeyRecord] | None = PrivateAttr(None)

    @field_validator("flow", "api_keys_file")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _relative_to(value, info)

    @property
    def source(self) -> Path | None:
        """The file this deployment was loaded from, if any."""
        return self._source

    @property
    def inline_api_keys(self) -> list[ApiKeyRecord]:
        """The keys written in the deployment file itself (``api_keys`` adds its api_keys_file's)."""
        return list(self._inline_api_keys if self._inline_api_keys is not None else self.api_keys)

    def init_values(self, variant: Variant) -> dict[str, Any] | None:
        """A flex flow variant's init values: the deployment's, with the variant's over them
        (None when neither gives any: the flow's own sample.init applies)."""
        if self.init is None and variant.init is None:
            return None
        return {**(self.init or {}), **(variant.init or {})}

    @property
    def is_proxy(self) -> bool:
        return self.type == "proxy"

    def _complete(self) -> None:
        # A proxy's calls are recorded in fixed fields (docs/proxy.md): the judges read those.
        if self.type == "proxy" and self.column_mapping == ColumnMapping():
            self.column_mapping = PROXY_COLUMNS.model_copy()

    def flow_of(self, variant: Variant) -> Path | None:
        """The flow file or folder a variant runs: its own ``flow``, else the deployment's."""
        return variant.flow if variant.flow is not None else self.flow

    def prompty_overrides(self, variant: Variant) -> dict[str, Any] | None:
        """A prompty variant's Prompty.load overrides: the deployment's init with the variant's
        merged in key by key at every depth (a variant may change only the parameters)."""
        if self.init is None and variant.init is None:
            return None
        return merge_values(self.init or {}, variant.init or {})

    def variant(self, variant_id: str) -> Variant | None:
        return next((v for v in self.variants if v.id == variant_id), None)

    def pick_variant(self, draw: float) -> Variant:
        """The variant for a uniform ``draw`` in [0, 1), by weight (weight 0 is never picked)."""
        total = sum(v.weight for v in self.variants)
        point = draw * total
        for variant in self.variants:
            if point < variant.weight:
                return variant
            point -= variant.weight
        return next(v for v in reversed(self.variants) if v.weight > 0)

    def problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = self._type_problems()
        variant_ids: set[str] = set()
        for index, variant in enumerate(self.variants):
            if variant.id in variant_ids:
                found.append((("variants", index, "id"), f"{variant.id!r} is listed twice"))
            variant_ids.add(variant.id)
        if self.variants and sum(v.weight for v in self.variants) <= 0:
            found.append((("variants",), "at least one variant needs a weight > 0"))
        key_ids: set[str] = set()
        for index, key in enumerate(self.api_keys):
            if key.id in key_ids:
                found.append((("api_keys", index, "id"), f"key id {key.id!r} is listed twice"))
            key_ids.add(key.id)
        metrics: list[str] = []
        if self.evaluation is not None:
            metrics = self.evaluation.metric_names()
            for index, metric in enumerate(self.evaluation.metrics):
                for column in METRIC_COLUMNS[metric]:
                    if getattr(self.column_mapping, column) is None:
                        found.append(
                            (("evaluation", "metrics", index), f"{metric} needs column_mapping.{column}")
                        )
            found += self._evaluator_problems(self.evaluation)
        destination_names: set[str] = set()
        for index, destination in enumerate(self.destinations):
            if destination.name in destination_names:
                found.append((("destinations", index, "name"), f"{destination.name!r} is listed twice"))
            destination_names.add(destination.name)
        monitor_ids: set[str] = set()
        for index, monitor in enumerate(self.monitors):
            where: Loc = ("monitors", index)
            if monitor.id in monitor_ids:
                found.append(((*where, "id"), f"{monitor.id!r} is listed twice"))
            monitor_ids.add(monitor.id)
            if monitor.variant is not None and monitor.variant not in variant_ids:
                found.append(((*where, "variant"), f"{monitor.variant!r} is not one of variants"))
            if monitor.metric is not None and monitor.metric not in metrics:
                missing = "there is no evaluation section" if self.evaluation is None else (
                    f"{monitor.metric} is not in evaluation.metrics nor a metric of evaluation.evaluators"
                )
                found.append(((*where, "metric"), f"{missing}, so {monitor.metric} is never scored"))
            elif monitor.metric is not None and self.evaluation is not None:
                found += [((*where, *loc), msg) for loc, msg in _monitor_scale_problems(monitor, self.evaluation)]
            for position, name in enumerate(monitor.notification.destinations or []):
                if name not in destination_names:
                    found.append(((*where, "notification", "destinations", position),
                                  f"{name!r} is not one of the deployment's destinations"))
        return found

    def _evaluator_problems(self, evaluation: Evaluation) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = []
        for index, evaluator in enumerate(evaluation.evaluators):
            where: Loc = ("evaluation", "evaluators", index)
            if evaluator.kind == "builtin":
                for column in METRIC_COLUMNS.get(evaluator.name, ()):
                    if getattr(self.column_mapping, column) is None:
                        found.append(((*where, "name"), f"{evaluator.name} needs column_mapping.{column}"))
            if evaluator.kind == "rubric":
                unmapped = sorted(evaluator.prompt_variables - set(self.evaluator_columns(evaluator)))
                if unmapped:
                    found.append((
                        (*where, "prompt" if evaluator.prompt is not None else "prompt_file"),
                        f"reads {', '.join(unmapped)}, which neither columns nor column_mapping maps",
                    ))
            if evaluator.judge is not None and evaluator.judge.connection is None and evaluator.judge.model is None:
                found.append(((*where, "judge"), "name a connection or a model (or leave judge out)"))
        return found

    def evaluator_columns(self, evaluator: EvaluatorConfig) -> dict[str, str]:
        """Evaluator input -> ``inputs.x`` / ``outputs.y``: the deployment's column_mapping roles
        that are mapped (question, answer, context, ground_truth), overridden by the evaluator's
        own ``columns``."""
        columns: dict[str, str] = {}
        for column in COLUMNS:
            reference = getattr(self.column_mapping, column)
            if reference is not None:
                columns[column] = reference
        if evaluator.kind != "builtin":
            columns.update(evaluator.columns)
        return columns


    def _type_problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = []
        if self.type == "flow":
            if self.flow is None:
                found.append((("flow",), "required for type flow"))
            if self.proxy is not None:
                found.append((("proxy",), "only for type proxy"))
            for index, variant in enumerate(self.variants):
                if variant.model is not None:
                    found.append((("variants", index, "model"), "only for type proxy (a flow's nodes name their models)"))
            return found
        if self.flow is not None:
            found.append((("flow",), "a proxy deployment runs no flow"))
        if self.proxy is None:
            found.append((("proxy",), "required for type proxy (at least its connection)"))
        for index, variant in enumerate(self.variants):
            if variant.nodes is not None:
                found.append((("variants", index, "nodes"), "only for type flow"))
            if variant.init is not None:
                found.append((("variants", index, "init"), "only for type flow (a flex flow's init values)"))
        if self.init is not None:
            found.append((("init",), "only for type flow (a flex flow's init values)"))
        if self.redaction.inputs or self.redaction.outputs:
            allowed = {"inputs": {"question", "context", "request"}, "outputs": {"answer", "choices", "tool_calls"}}
            for side in ("inputs", "outputs"):
                for index, name in enumerate(getattr(self.redaction, side)):
                    if name not in allowed[side]:
                        found.append((("redaction", side, index),
                                      f"{name!r} is not a recorded proxy field ({', '.join(sorted(allowed[side]))})"))
        return found


def _monitor_scale_problems(monitor: Monitor, evaluation: Evaluation) -> list[tuple[Loc, str]]:
    """A monitor on a metric off the 1-5 scale: its average threshold lives on that metric's
    scale, and its pass rate follows the evaluator's pass rule (no score_threshold)."""
    metric = monitor.metric
    evaluator = evaluation.evaluator_of(metric) if metric is not None else None
    if evaluator is None or metric is None or evaluator.kind == "builtin":
        return []
    found: list[tuple[Loc, str]] = []
    scale = evaluator.scale_of(metric)
    if monitor.statistic == "average" and not scale.low <= monitor.threshold <= scale.high:
        found.append((("threshold",), f"must be on {metric}'s scale ({scale.low:g} to {scale.high:g})"))
    if monitor.score_threshold is not None:
        found.append((("score_threshold",), f"{metric} passes by its evaluator's pass rule; set pass there"))
    return found
