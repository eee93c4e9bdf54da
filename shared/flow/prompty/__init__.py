"""Prompt flow's ``.prompty`` files: read (file.py), deployed as a one-call flow (deployment.py),
and called from flow code as ``promptflow.core.Prompty`` / ``AsyncPrompty`` (core.py)."""

from shared.flow.prompty.core import AsyncPrompty, Prompty, provide_connections
from shared.flow.prompty.deployment import load_prompty_flow
from shared.flow.prompty.file import PromptyFile, load_prompty

__all__ = ["AsyncPrompty", "Prompty", "PromptyFile", "load_prompty", "load_prompty_flow", "provide_connections"]
