"""An evaluator's version: the short hash of its content, read from the files it names.

The content is what changes what an evaluator scores: its kind, scale and pass rule, a rubric's
prompt text, a code file's bytes and function, a prompty file's bytes, every file of a flow
folder (and a flow's ``outputs``, a flex flow's ``init``). Apart from evaluators.py (the fields,
what they mean, which apply to which kind): this is where the evaluator's files are read, bounded
(MAX_EVALUATOR_FILE_BYTES, MAX_FLOW_FILES), and what cannot be read becomes a problem of the
evaluator's, reported with the others at load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from shared.deployments.errors import Loc

if TYPE_CHECKING:  # evaluators.py imports this module
    from shared.deployments.evaluators import EvaluatorConfig

VERSION_CHARS = 12
MAX_FLOW_FILES = 500
MAX_EVALUATOR_FILE_BYTES = 5_000_000
_JINJA = SandboxedEnvironment()


def content_version(content: dict[str, Any]) -> str:
    """The first VERSION_CHARS hex digits of the SHA-256 of ``content`` as canonical JSON."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:VERSION_CHARS]


@dataclass
class EvaluatorContent:
    """What one evaluator's content is, as read at load (not for kind builtin: its version is its
    prompt version)."""

    evaluator: EvaluatorConfig
    content: dict[str, Any] | None = None  # None: a file could not be read (see problems)
    prompt_text: str = ""  # a rubric's prompt, inline or its prompt_file's text
    prompt_variables: frozenset[str] = frozenset()  # the inputs a rubric's prompt reads
    problems: list[tuple[Loc, str]] = field(default_factory=list)

    @classmethod
    def read(cls, evaluator: EvaluatorConfig) -> EvaluatorContent:
        found = cls(evaluator)
        found.content = found._content()
        return found

    @property
    def version(self) -> str:
        return content_version(self.content) if self.content is not None else ""

    def _content(self) -> dict[str, Any] | None:
        from shared.deployments.evaluators import OUTPUT_KINDS  # evaluators.py imports this module

        ev = self.evaluator
        content: dict[str, Any] = {"kind": ev.kind}
        if ev.scale is not None:
            content["scale"] = ev.scale.canonical()
        if ev.pass_ is not None:
            content["pass"] = ev.pass_.canonical()
        if ev.kind == "rubric":
            if ev.prompt_file is not None:
                text = self._read(ev.prompt_file, ("prompt_file",))
                if text is None:
                    return None
                try:
                    content["prompt"] = text.decode("utf-8")
                except UnicodeDecodeError:
                    self.problems.append((("prompt_file",), "is not UTF-8 text"))
                    return None
            else:
                content["prompt"] = ev.prompt or ""
            self.prompt_text = content["prompt"]
            self._read_variables(("prompt_file",) if ev.prompt_file is not None else ("prompt",))
        elif ev.kind == "code" and ev.code_path is not None:
            data = self._read(ev.code_path, ("code",))
            if data is None:
                return None
            content["code"] = hashlib.sha256(data).hexdigest()
            content["function"] = ev.code_function
        elif ev.kind == "prompty" and ev.prompty is not None:
            data = self._read(ev.prompty, ("prompty",))
            if data is None:
                return None
            content["prompty"] = hashlib.sha256(data).hexdigest()
            if ev.outputs:
                content["outputs"] = {k: v.model_dump(mode="json", exclude_none=True, by_alias=True)
                                      for k, v in ev.outputs.items()}
        elif ev.kind in OUTPUT_KINDS and ev.flow is not None:
            files = self._flow_files(ev.flow)
            if files is None:
                return None
            content["flow"] = files
            if ev.outputs:
                content["outputs"] = {k: v.model_dump(mode="json", exclude_none=True, by_alias=True)
                                      for k, v in ev.outputs.items()}
            if ev.init:
                # What the entry is built with changes what it scores (a threshold, the judge model).
                content["init"] = ev.init
        return content

    def _read_variables(self, loc: Loc) -> None:
        # Parsed, never rendered, here: the processor renders it in the flow runtime's sandbox.
        try:
            self.prompt_variables = frozenset(meta.find_undeclared_variables(_JINJA.parse(self.prompt_text)))
        except TemplateSyntaxError as exc:
            self.problems.append((loc, f"is not a valid Jinja2 template: {exc.message} (line {exc.lineno})"))
            return
        if not self.prompt_variables:
            self.problems.append((loc, "reads no input: name the judged texts, e.g. {{ answer }}"))

    def _read(self, path: Path, loc: Loc) -> bytes | None:
        try:
            if path.stat().st_size > MAX_EVALUATOR_FILE_BYTES:
                self.problems.append((loc, f"{path.name} is larger than {MAX_EVALUATOR_FILE_BYTES} bytes"))
                return None
            return path.read_bytes()
        except OSError as exc:
            self.problems.append((loc, f"cannot read {path}: {exc.strerror or exc}"))
            return None

    def _flow_files(self, folder: Path) -> dict[str, str] | None:
        if not folder.is_dir():
            self.problems.append((("flow",), f"{folder} is not a folder"))
            return None
        files: dict[str, str] = {}
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            # Caches and hidden files are not the flow's content (a run writes __pycache__).
            if any(part.startswith(".") or part == "__pycache__" for part in relative.parts) or not path.is_file():
                continue
            if len(files) >= MAX_FLOW_FILES:
                self.problems.append((("flow",), f"more than {MAX_FLOW_FILES} files in {folder}"))
                return None
            data = self._read(path, ("flow",))
            if data is None:
                return None
            files[relative.as_posix()] = hashlib.sha256(data).hexdigest()
        return files
