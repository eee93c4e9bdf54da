"""Typed application keys of the llmsim app."""

from __future__ import annotations

from aiohttp import web

from services.llmsim.settings import LlmsimSection
from services.llmsim.state import SimulatorState

SECTION = web.AppKey("llmsim_section", LlmsimSection)
STATE = web.AppKey("llmsim_state", SimulatorState)
