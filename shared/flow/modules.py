"""Each loaded flow version imports its Python code into a package of its own.

Flow code imports its sibling modules by plain name (``from utils import x``), as it does under
prompt flow, which puts the flow folder on ``sys.path``. Doing that here would make two flows'
``utils.py`` one module (whichever imported first) and keep a flow's code forever: a reload
after editing a file would run the old code. Instead each load gets a fresh package
``_promptpulse_flow_<n>``; the flow's modules are its submodules (their own ``sys.modules``
entries), and the ``__import__`` seen by flow code maps a plain name that the flow root holds
to the submodule of this load. Everything else imports as usual. The serving version keeps its
modules until the new one has loaded, since each lives in its own package; they leave
``sys.modules`` when the loaded flow that uses them is dropped (loader.py).

Where prompt flow itself is not installed, ``promptflow...`` imports in flow code get this
load's stand-in modules (python_node.py) without ever entering ``sys.modules``.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PACKAGE_PREFIX = "_promptpulse_flow_"
_original_import = builtins.__import__
_numbers = itertools.count(1)
_namespaces: dict[str, FlowModules] = {}
_lock = threading.Lock()


class FlowModules:
    """The import namespace of one loaded flow version rooted at ``root``."""

    def __init__(self, root: Path, stand_ins: Mapping[str, types.ModuleType] | None = None) -> None:
        self.root = root.resolve()
        self.package = f"{PACKAGE_PREFIX}{next(_numbers)}"
        self.stand_ins = dict(stand_ins or {})
        self._stand_in_tops = {name.partition(".")[0] for name in self.stand_ins}
        self._local: dict[str, bool] = {}
        self.builtins = dict(vars(builtins))
        self.builtins["__import__"] = self._import
        package = types.ModuleType(self.package, f"Python code of the flow in {self.root}")
        spec = importlib.machinery.ModuleSpec(self.package, None, is_package=True)
        spec.submodule_search_locations = [str(self.root)]
        package.__spec__ = spec
        package.__path__ = [str(self.root)]
        package.__package__ = self.package
        with _lock:
            _install_finder()
            _namespaces[self.package] = self
            sys.modules[self.package] = package

    def release(self) -> None:
        """Forget this namespace's modules (the loaded flow that used them is gone)."""
        with _lock:
            _namespaces.pop(self.package, None)
            prefix = f"{self.package}."
            for name in [n for n in sys.modules if n == self.package or n.startswith(prefix)]:
                del sys.modules[name]

    def module_name(self, path: Path) -> str:
        """The name the module of file ``path`` (inside the root) has in this namespace."""
        try:
            relative = path.resolve().relative_to(self.root).with_suffix("")
        except ValueError:
            raise ImportError(f"{path} is outside the flow folder; list it in additional_includes") from None
        return ".".join((self.package, *relative.parts))

    def import_file(self, path: Path) -> types.ModuleType:
        """The module of ``path``, imported once per namespace (a node file another imports is one module)."""
        return importlib.import_module(self.module_name(path))

    def local_name(self, name: str) -> str | None:
        """``name`` as a module of this flow, when it is a plain import the flow root answers."""
        return f"{self.package}.{name}" if self._is_local(name.partition(".")[0]) else None

    def _is_local(self, top: str) -> bool:
        known = self._local.get(top)
        if known is None:
            base = self.root / top
            if (base.with_name(f"{top}.py")).is_file() or (base / "__init__.py").is_file():
                known = True
            elif base.is_dir():
                # A folder without __init__.py is a namespace package: Python finds it only when
                # no installed module has the name, as the flow folder on sys.path would.
                try:
                    known = importlib.util.find_spec(top) is None
                except (ImportError, ValueError):
                    known = True
            else:
                known = False
            self._local[top] = known
        return known

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> types.ModuleType:
        if level == 0:
            top = name.partition(".")[0]
            if top in self._stand_in_tops:
                return self._stand_in(name, fromlist)
            if self._is_local(top):
                module = _original_import(f"{self.package}.{name}", globals, locals, fromlist, 0)
                return module if fromlist else sys.modules[f"{self.package}.{top}"]
        return _original_import(name, globals, locals, fromlist, level)

    def _stand_in(self, name: str, fromlist: Sequence[str] | None) -> types.ModuleType:
        module = self.stand_ins.get(name if fromlist else name.partition(".")[0])
        if module is None or name not in self.stand_ins:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return module


class _FlowSourceLoader(importlib.abc.Loader):
    """Runs a flow file with its namespace's ``__import__``; read fresh, never from a .pyc."""

    def __init__(self, namespace: FlowModules, path: Path) -> None:
        self.namespace = namespace
        self.path = path

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        code = compile(self.path.read_bytes(), str(self.path), "exec", dont_inherit=True)
        module.__dict__["__builtins__"] = self.namespace.builtins
        exec(code, module.__dict__)  # noqa: S102 - flow code is what the deployment runs

    def get_source(self, fullname: str) -> str:
        return self.path.read_text(encoding="utf-8")


class _FlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``_promptpulse_flow_<n>.x.y`` in the folders of its parent, as Python's path finder
    would, but with the loader above."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PACKAGE_PREFIX):
            return None
        package = fullname.partition(".")[0]
        namespace = _namespaces.get(package)
        if namespace is None or package == fullname:
            return None
        leaf = fullname.rpartition(".")[2]
        locations = [Path(p) for p in (path or [])]
        for location in locations:
            init = location / leaf / "__init__.py"
            if init.is_file():
                return importlib.util.spec_from_file_location(
                    fullname, init, loader=_FlowSourceLoader(namespace, init),
                    submodule_search_locations=[str(init.parent)],
                )
            file = location / f"{leaf}.py"
            if file.is_file():
                return importlib.util.spec_from_file_location(fullname, file, loader=_FlowSourceLoader(namespace, file))
        folders = [str(location / leaf) for location in locations if (location / leaf).is_dir()]
        if folders:
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = folders
            return spec
        return None


_finder = _FlowFinder()


def _install_finder() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def display_module(name: str) -> str:
    """A module name as the flow's author knows it: without this load's package."""
    if name.startswith(PACKAGE_PREFIX):
        return name.partition(".")[2] or name
    return name
