"""``additional_includes``: files and folders outside the flow folder that the flow uses.

Resolved as prompt flow resolves them: each entry is a path relative to the flow folder (or
absolute); prompt flow copies the flow folder and then every include, by its name, into the root
of a snapshot folder it runs from (a folder's files merge into a folder of that name; an
included file replaces a flow file of the same name). We build the same snapshot once per load,
in a private temporary folder that lives as long as the loaded flow, so node sources, templates,
plain-name imports and files read relative to ``__file__`` all find what they would under
prompt flow.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

FIELD = "additional_includes"
_IGNORED = shutil.ignore_patterns("__pycache__", ".git")


def include_sources(folder: Path, raw: Any) -> tuple[list[Path], list[tuple[str, str]]]:
    """The existing paths the entries name, and (field, reason) for each entry that is wrong."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [(FIELD, "must be a list of paths relative to the flow folder")]
    sources: list[Path] = []
    problems: list[tuple[str, str]] = []
    for index, entry in enumerate(raw):
        where = f"{FIELD}[{index}]"
        if not isinstance(entry, str) or not entry.strip():
            problems.append((where, "must be a path relative to the flow folder"))
            continue
        path = Path(entry)
        source = (path if path.is_absolute() else folder / path).resolve()
        if not source.exists():
            hint = " (a .zip of a folder is not supported: include the folder)" if entry.endswith(".zip") else ""
            problems.append((where, f"{entry!r} does not exist (resolved against the flow folder: {source}){hint}"))
            continue
        if source.name in ("", ".", ".."):
            problems.append((where, f"{entry!r} has no name to appear under in the flow folder"))
            continue
        sources.append(source)
    return sources, problems


def build_snapshot(folder: Path, sources: list[Path]) -> Path:
    """A private folder holding the flow folder with every include at its root; remove it with
    :func:`remove_snapshot` (or :func:`keep_while` the loaded flow lives)."""
    snapshot = Path(tempfile.mkdtemp(prefix="promptpulse-flow-"))  # mode 0700: private
    try:
        shutil.copytree(folder, snapshot, dirs_exist_ok=True, ignore=_IGNORED)
        for source in sources:
            target = snapshot / source.name
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True, ignore=_IGNORED)
            else:
                if target.is_dir():
                    shutil.rmtree(target)
                shutil.copy2(source, target)
        snapshot.chmod(0o700)  # copytree gave it the flow folder's mode
    except BaseException:
        remove_snapshot(snapshot)
        raise
    return snapshot


def remove_snapshot(snapshot: Path) -> None:
    shutil.rmtree(snapshot, ignore_errors=True)


def keep_while(owner: object, snapshot: Path) -> None:
    """Remove ``snapshot`` once ``owner`` (the loaded flow) is gone, or when the process exits."""
    weakref.finalize(owner, remove_snapshot, snapshot)
