"""Prompty files (``*.prompty``) as the deployments loader reads them: the front matter's inputs
and outputs, enough to check the deployment's column mapping and redaction.

A prompty file is a YAML front matter between two ``---`` lines, then a Jinja2 template. The
flow runtime (shared/flow/prompty/) validates the rest; both split the file here, one way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

PROMPTY_SUFFIX = ".prompty"
# The opening line (blank lines before it are allowed, as prompt flow allows them), then
# everything up to the first line that is only dashes. (prompt flow's own split takes the *last*
# such line, which cuts a template that contains a Markdown rule.)
_FRONT_MATTER = re.compile(r"\A\ufeff?\s*?^-{3,}[ \t]*\r?\n(.*?)^-{3,}[ \t]*(?:\r?\n|\Z)(.*)\Z", re.DOTALL | re.MULTILINE)
SINGLE_OUTPUT = "output"  # prompt flow's name for a prompty's one (text) output


class PromptyFormatError(ValueError):
    """Not a prompty file: no front matter, or one that is not a YAML mapping."""


def is_prompty(path: Path | str) -> bool:
    return Path(path).suffix == PROMPTY_SUFFIX


def split_prompty(text: str) -> tuple[str, str]:
    """(front matter YAML, template) of a prompty file's text; raises PromptyFormatError."""
    found = _FRONT_MATTER.match(text)
    if found is None:
        raise PromptyFormatError(
            "must start with a YAML front matter between two '---' lines, followed by the prompt template"
        )
    return found.group(1), found.group(2)


def read_front_matter(path: Path) -> tuple[dict[str, Any], str]:
    """(front matter, template) of a prompty file; raises PromptyFormatError or OSError."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptyFormatError(f"is not UTF-8 text: {exc}") from None
    front, template = split_prompty(text)
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        raise PromptyFormatError(f"its front matter is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PromptyFormatError("its front matter must be a YAML mapping (name, model, inputs...)")
    return data, template


def prompty_interface(path: Path) -> tuple[set[str], set[str]]:
    """(input names, output names) of a prompty file, lightly read; raises PromptyFormatError.

    Inputs are the ``inputs`` mapping's keys (else the ``sample``'s, when it is written inline);
    outputs the ``outputs`` mapping's keys, else the one ``output``.
    """
    data, _ = read_front_matter(path)
    inputs = data.get("inputs")
    if not isinstance(inputs, dict):
        sample = data.get("sample")
        inputs = sample if isinstance(sample, dict) else {}
    outputs = data.get("outputs")
    names = set(map(str, outputs)) if isinstance(outputs, dict) and outputs else {SINGLE_OUTPUT}
    return set(map(str, inputs)), names
