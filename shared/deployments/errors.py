"""Errors for the deployments folder, each naming the file and the field path.

A bad deployment must stop a service at start-up with a message a human can act on, e.g.
``deploy/local/deployments/demo.yaml: evaluation.sampling_rate: must be <= 1``. Pydantic's
locations and messages are turned into that form here, and YAML is read with a loader that
rejects duplicate keys, because PyYAML would otherwise keep the last of two ``evaluation:``
sections without a word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one field of one file."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


class DeploymentConfigError(ValueError):
    """A deployment, connections or API key file is invalid; lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConnectionKeyMissingError(ValueError):
    """A connection names an environment variable for its key that is not set."""


def display_path(path: Path) -> str:
    """The path as a user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def field_path(loc: Loc) -> str:
    """``('monitors', 0, 'window')`` -> ``monitors[0].window``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_PLAIN_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field (check the spelling; see docs/deployments.md)",
    "finite_number": "must be a finite number",
}


def _number(value: Any) -> Any:
    # 1.0 -> 1: the bound reads as the user wrote it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _message(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _PLAIN_MESSAGES:
        return _PLAIN_MESSAGES[kind]
    bounds = {
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {_number(ctx.get(key))}, got {error.get('input')!r}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} character(s) long"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind == "string_pattern_mismatch":
        return f"{error.get('input')!r} must match {ctx.get('pattern')}"
    if kind == "literal_error":
        return f"{error.get('input')!r} is not one of {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


def problems_from_validation(
    file: str, exc: ValidationError, prefix: Loc = ()
) -> list[Problem]:
    """Pydantic errors as :class:`Problem` rows for ``file``."""
    return [Problem(file, field_path(prefix + tuple(e["loc"])), _message(e)) for e in exc.errors()]


def problems_at(file: str, located: Iterable[tuple[Loc, str]], prefix: Loc = ()) -> list[Problem]:
    """(location, message) pairs from a model's own checks as :class:`Problem` rows."""
    return [Problem(file, field_path(prefix + loc), message) for loc, message in located]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file, or :class:`DeploymentConfigError` naming the file."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeploymentConfigError([Problem(shown, "", f"cannot read {what}: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise DeploymentConfigError([Problem(shown, "", f"{what} is not UTF-8 text")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise DeploymentConfigError([Problem(shown, "", f"invalid YAML: {where}{reason}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DeploymentConfigError(
            [Problem(shown, "", f"{what} must be a YAML mapping, got {type(data).__name__}")]
        )
    return data

