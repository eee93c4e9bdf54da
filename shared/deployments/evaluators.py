"""Evaluators in the deployment file: what each judges, on which scale, and when a score passes.

Read by the processor (which runs them) and the aggregator (which needs each metric's scale and
pass rule for rollups and monitors). docs/deployments.md ("Evaluators") describes every field;
docs/evaluation.md how each kind runs.

An evaluator's **version** is a short hash of its content: the prompt text, the scale, the pass
rule, the code file's bytes and function, every file of a flow folder. Its optional ``label`` is
a human name for one version; the label -> version record is the deployment's lock file
(lock.py), and a changed content under a recorded label is a load error. The content is read
and hashed by evaluator_version.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, ValidationInfo, field_validator

from shared.deployments.base import (
    BASE_DIR,
    BUILTIN_PROMPT_VERSIONS,
    COMBINED_SUFFIX,
    CONNECTION_NAME_PATTERN,
    FIELD_NAME_PATTERN,
    METRICS,
    ConfigModel,
    Number,
)
from shared.deployments.errors import Loc
from shared.deployments.evaluator_version import EvaluatorContent, content_version
from shared.deployments.scales import (
    BUILTIN_SCALE,
    FLOAT_SCALE,
    PassRule,
    Scale,
    ScaleField,
    default_pass_rule,
)

# An evaluator's name is a metric name; a flow evaluator's metrics are `<name>.<output>`.
EVALUATOR_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
METRIC_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}$"

EvaluatorKind = Literal["builtin", "rubric", "code", "flow", "flex", "prompty"]
AVAILABLE_KINDS = frozenset({"builtin", "rubric", "code", "flow", "flex", "prompty"})
# Kinds whose metrics are `<name>.<output>` (flex and prompty only when `outputs` lists them).
OUTPUT_KINDS = frozenset({"flow", "flex", "prompty"})
DEFAULT_CODE_TIMEOUT_SECONDS = 5.0


def _evaluator_reference(value: Any) -> Any:
    """``${data.x}`` / ``${run.outputs.x}`` (prompt flow's mapping syntax), ``${inputs.x}`` and
    plain ``inputs.x`` / ``outputs.x`` all name a request input or a response output.

    A live request has no separate dataset: prompt flow's ``data`` is the request's inputs and
    ``run.outputs`` the flow's outputs (``run.inputs`` the inputs again).
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1].strip()
    for prefix, side in (("data.", "inputs."), ("run.outputs.", "outputs."), ("run.inputs.", "inputs.")):
        if text.startswith(prefix):
            return side + text[len(prefix):]
    return text


EvaluatorReference = Annotated[
    str,
    BeforeValidator(_evaluator_reference),
    Field(pattern=r"^(inputs|outputs)\.[A-Za-z_][A-Za-z0-9_]*$"),
]
InputName = Annotated[str, Field(pattern=FIELD_NAME_PATTERN)]


class JudgeChoice(ConfigModel):
    """A rubric's own judge; each field unset takes the deployment's evaluation.judge."""

    connection: str | None = Field(None, pattern=CONNECTION_NAME_PATTERN)
    model: str | None = Field(None, min_length=1, max_length=200)


class FlowOutput(ConfigModel):
    """Scale and pass rule of one output of an evaluation flow."""

    scale: ScaleField | None = None
    pass_: PassRule | None = Field(None, alias="pass")


class EvaluatorConfig(ConfigModel):
    """One evaluator. Fields after ``pass`` belong to one kind each (checked in problems())."""

    name: str = Field(pattern=EVALUATOR_NAME_PATTERN)
    kind: EvaluatorKind
    label: str | None = Field(None, pattern=LABEL_PATTERN)
    columns: dict[InputName, EvaluatorReference] = Field(default_factory=dict)
    scale: ScaleField | None = None
    pass_: PassRule | None = Field(None, alias="pass")
    # rubric
    prompt: str | None = Field(None, min_length=1, max_length=100_000)
    prompt_file: Path | None = None
    judge: JudgeChoice | None = None
    # code
    code: str | None = Field(None, pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$")
    timeout_seconds: Number | None = Field(None, gt=0, le=600)
    # flow, flex
    flow: Path | None = None
    outputs: dict[Annotated[str, Field(pattern=FIELD_NAME_PATTERN)], FlowOutput] | None = None
    # flex: the entry class's __init__ values (model configurations name a connection)
    init: dict[str, Any] | None = None
    # prompty: a .prompty file (its JSON answer's fields are metrics when `outputs` lists them)
    prompty: Path | None = None

    _base_dir: Path | None = PrivateAttr(None)
    _version: str = PrivateAttr("")
    _prompt_text: str = PrivateAttr("")
    _prompt_variables: frozenset[str] = PrivateAttr(frozenset())
    _content_problems: list[tuple[Loc, str]] = PrivateAttr(default_factory=list)

    @field_validator("prompt_file", "flow", "prompty")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get(BASE_DIR)
        if value is None or base is None or value.is_absolute():
            return value
        return (Path(base) / value).resolve()

    @field_validator("code")
    @classmethod
    def _code_relative_to_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get(BASE_DIR)
        if value is None or base is None:
            return value
        path, _, function = value.rpartition(":")
        if not Path(path).is_absolute():
            path = str((Path(base) / path).resolve())
        return f"{path}:{function}"

    # -- what it is ---------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The short hash of this evaluator's content (set at load; see module docstring)."""
        return self._version

    @property
    def prompt_text(self) -> str:
        """A rubric's prompt: ``prompt``, or ``prompt_file``'s text as read at load (the text
        the version was computed from)."""
        return self._prompt_text

    @property
    def prompt_variables(self) -> frozenset[str]:
        """The inputs a rubric's prompt reads (its Jinja2 variables)."""
        return self._prompt_variables

    @property
    def code_path(self) -> Path | None:
        return Path(self.code.rpartition(":")[0]) if self.code else None

    @property
    def code_function(self) -> str | None:
        return self.code.rpartition(":")[2] if self.code else None

    @property
    def effective_scale(self) -> Scale:
        """The scale of a single-output evaluator: given, or 1-5 for a judge (built-in, rubric)
        and 0-1 for code (a flow's is per output, see scale_of)."""
        if self.scale is not None:
            return self.scale
        return FLOAT_SCALE if self.kind in ("code", "flow", "flex") else BUILTIN_SCALE

    @property
    def effective_pass(self) -> PassRule:
        return self.pass_ or default_pass_rule(self.effective_scale)

    @property
    def timeout(self) -> float:
        return float(self.timeout_seconds or DEFAULT_CODE_TIMEOUT_SECONDS)

    def metrics(self) -> list[str]:
        """The metrics this evaluator emits: its name, or ``<name>.<output>`` for a flow (and
        for a flex flow whose ``outputs`` name the fields of the mapping its entry returns)."""
        if self.kind == "flow" or (self.kind in OUTPUT_KINDS and self.outputs):
            return [f"{self.name}.{output}" for output in self.flow_outputs()]
        return [self.name]

    def flow_outputs(self) -> list[str]:
        """A flow evaluator's outputs: those listed under ``outputs``, else the flow's own."""
        if self.outputs:
            return list(self.outputs)
        if self.flow is None or self.kind != "flow":
            return []
        from shared.deployments.loader import read_flow_interface  # loader imports this module

        try:
            _, outputs, _ = read_flow_interface(self.flow)
        except Exception:  # reported by _content_problems; no outputs, no metrics
            return []
        return sorted(outputs)

    def scale_of(self, metric: str) -> Scale:
        """The scale of one of this evaluator's metrics."""
        if self.kind in OUTPUT_KINDS:
            output = self.outputs.get(metric.partition(".")[2]) if self.outputs else None
            if output is not None and output.scale is not None:
                return output.scale
            return self.effective_scale
        return self.effective_scale

    def pass_rule_of(self, metric: str) -> PassRule:
        if self.kind in OUTPUT_KINDS and self.outputs:
            output = self.outputs.get(metric.partition(".")[2])
            if output is not None and output.pass_ is not None:
                return output.pass_
            return self.pass_ or default_pass_rule(self.scale_of(metric))
        return self.effective_pass

    # -- checks and version ----------------------------------------------------------------------

    def _complete(self) -> None:
        self._content_problems = []
        if self.kind == "builtin":
            # Our own prompt's version, the one built-in outcomes have always carried (in
            # judge.prompt_version), so their history continues across the upgrade.
            self._version = BUILTIN_PROMPT_VERSIONS.get(self.name, "")
            return
        read = EvaluatorContent.read(self)
        self._version = read.version
        self._content_problems = read.problems
        self._prompt_text, self._prompt_variables = read.prompt_text, read.prompt_variables

    def set_combined(self) -> None:
        """A built-in judged in one call with others: its prompt, hence its version, differs."""
        if self.kind == "builtin" and self._version and not self._version.endswith(COMBINED_SUFFIX):
            self._version += COMBINED_SUFFIX

    def problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = list(self._content_problems)
        kind = self.kind
        if kind not in AVAILABLE_KINDS:
            found.append((("kind",), f"kind {kind} is not available yet"))
            return found
        allowed = {
            "builtin": {"pass_"},
            "rubric": {"prompt", "prompt_file", "judge", "columns", "scale", "pass_", "label"},
            "code": {"code", "timeout_seconds", "columns", "scale", "pass_", "label"},
            "flow": {"flow", "outputs", "timeout_seconds", "columns", "scale", "pass_", "label"},
            "flex": {"flow", "init", "outputs", "timeout_seconds", "columns", "scale", "pass_", "label"},
            "prompty": {"prompty", "outputs", "timeout_seconds", "columns", "scale", "pass_", "label"},
        }[kind]
        for field in ("label", "scale", "prompt", "prompt_file", "judge", "code", "timeout_seconds",
                      "flow", "outputs", "init", "prompty", "pass_"):
            value = getattr(self, field)
            if value is not None and field not in allowed:
                found.append(((field.rstrip("_"),), f"does not apply to kind {kind}"))
        if self.columns and "columns" not in allowed:
            found.append((("columns",), "built-in evaluators read the deployment's column_mapping"))
        if kind == "builtin" and self.name not in METRICS:
            found.append((("name",), f"{self.name!r} is not a built-in metric ({', '.join(METRICS)})"))
        if kind == "rubric" and (self.prompt is None) == (self.prompt_file is None):
            found.append((("prompt",), "give exactly one of prompt or prompt_file"))
        if kind == "code" and self.code is None:
            found.append((("code",), "required: '<file>.py:<function>', relative to the deployment file"))
        if kind == "flow" and self.flow is None:
            found.append((("flow",), "required: the evaluation flow's folder"))
        if kind == "flex" and self.flow is None:
            found.append((("flow",), "required: the flex evaluation flow's folder (with flow.flex.yaml)"))
        elif kind == "flex" and self.flow is not None and self.flow.is_dir() and not (self.flow / "flow.flex.yaml").is_file():
            found.append((("flow",), f"{self.flow} has no flow.flex.yaml (a flow.dag.yaml folder is kind: flow)"))
        if kind == "builtin" and self.scale is not None:
            found.append((("scale",), "built-in metrics are scored 1 to 5"))
        per_output = kind == "flow" or (kind in OUTPUT_KINDS and bool(self.outputs))
        if kind == "prompty" and self.prompty is None:
            found.append((("prompty",), "required: the .prompty file, relative to the deployment file"))
        elif kind == "prompty" and self.prompty is not None and self.prompty.suffix != ".prompty":
            found.append((("prompty",), f"{self.prompty.name} is not a .prompty file"))
        if self.pass_ is not None and not per_output:
            found += [(("pass", *loc), msg) for loc, msg in self.pass_.scale_problems(self.effective_scale)]
        for name, output in (self.outputs or {}).items():
            scale = output.scale or self.effective_scale
            if output.pass_ is not None:
                found += [(("outputs", name, "pass", *loc), msg) for loc, msg in output.pass_.scale_problems(scale)]
        return found


__all__ = [
    "AVAILABLE_KINDS",
    "BUILTIN_SCALE",
    "FLOAT_SCALE",
    "EVALUATOR_NAME_PATTERN",
    "METRIC_NAME_PATTERN",
    "OUTPUT_KINDS",
    "EvaluatorConfig",
    "EvaluatorKind",
    "FlowOutput",
    "JudgeChoice",
    "PassRule",
    "Scale",
    "content_version",
    "default_pass_rule",
]
