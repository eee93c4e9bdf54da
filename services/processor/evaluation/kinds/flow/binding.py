"""An evaluation flow's inputs, taken from one judged request through the evaluator's columns.

Each flow input is bound, in this order, from:

1. the evaluator's column for it (``columns: {answer: ${run.outputs.answer}}``; prompt flow's
   ``${data.x}`` / ``${run.outputs.x}`` and our ``inputs.x`` / ``outputs.x`` are the same thing,
   read by the deployment schema), or the deployment's column_mapping role of that name
   (``question``, ``answer``, ``context``, ``ground_truth``);
2. else the request input of the same name: what prompt flow does when a batch run gives no
   mapping for an input (``${data.<name>}``);
3. else nothing: the flow's default, if it has one.

An input that a column maps, or one without a default, that ends up with nothing (absent, null,
blank text) makes every metric of the evaluator not applicable to this request, as a built-in
judge without its columns is: a flow file's default (written for ``pf flow test``) never stands in
for a value the request should have had, such as the ground truth. Values are
converted to the input's type with prompt flow's leniency (``"3"`` for an int, JSON text for a
list); a ``string`` input given a list or an object gets it as JSON text (prompt flow would write
Python's repr of it, which no judge reads better).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.processor.evaluation.protocol import RequestFields, column_text
from shared.flow import Flow
from shared.flow.inputs import convert_default


class InputTypeError(ValueError):
    """A request's value cannot be the flow input's type; the message names input and source."""


@dataclass(frozen=True)
class InputSource:
    """Where one flow input comes from: a column reference, or None (the same-named input)."""

    name: str
    reference: str | None
    required: bool
    type: str


def input_sources(flow: Flow, columns: Mapping[str, str]) -> tuple[InputSource, ...]:
    return tuple(
        InputSource(spec.name, columns.get(spec.name), spec.required, spec.type) for spec in flow.inputs.values()
    )


def bind_request(sources: tuple[InputSource, ...], request: RequestFields) -> tuple[dict[str, Any], list[str]]:
    """(the flow's inputs, the inputs this request lacks); raises InputTypeError."""
    bound: dict[str, Any] = {}
    missing: list[str] = []
    for source in sources:
        if source.reference is not None:
            value = request.column(source.reference)
        else:
            value = request.inputs.get(source.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if source.required or source.reference is not None:
                missing.append(source.name)
            continue  # the flow's default
        bound[source.name] = _convert(source, value)
    return bound, missing


def _convert(source: InputSource, value: Any) -> Any:
    if source.type in ("image", "any"):
        return value  # the runtime checks an image itself; a flex entry's untyped parameter takes any value
    if source.type == "string" and isinstance(value, list | dict):
        return column_text(value) or json.dumps(value)
    try:
        return convert_default(source.type, value)
    except ValueError:
        where = source.reference or f"inputs.{source.name}"
        shown = column_text(value) or repr(value)
        shown = shown if len(shown) <= 60 else shown[:60] + "..."
        raise InputTypeError(
            f"flow input {source.name!r} is {source.type}, but {where} holds {shown!r}"
        ) from None
