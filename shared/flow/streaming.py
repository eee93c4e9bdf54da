"""Streaming runs: the chat output as text deltas while the LLM writes it.

The streamed output is the one marked ``is_chat_output``, else the only output that references
an LLM node. It streams live when it is an LLM node's whole output (``${node.output}``), or a Python node's
whole output and that node returns a generator (each text item is a delta as it is produced);
otherwise it arrives as one delta when the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shared.flow.model import Flow
from shared.flow.plan import Plan
from shared.flow.result import FlowResult, LlmCall

if TYPE_CHECKING:
    from shared.flow.executor import _Run


class _End:
    def __repr__(self) -> str:
        return "END"


END: Any = _End()


def streaming_target(flow: Flow, plan: Plan) -> tuple[str | None, str | None]:
    """(the streamed output's name, the LLM or Python node that may stream it live, if any)."""
    from shared.flow.flex import FlexFlow

    if isinstance(flow, FlexFlow):  # what the entry returns or yields (flex_executor.py)
        return flow.streamed_output, None
    chat = [o for o in flow.outputs.values() if o.is_chat_output]
    if chat:
        output = chat[0]
    else:
        on_llm = [
            o for o in flow.outputs.values()
            if o.reference.node is not None and plan.nodes[o.reference.node].type == "llm"
        ]
        if len(on_llm) != 1:
            return None, None
        output = on_llm[0]
    ref = output.reference
    if ref.node is not None and not ref.path and plan.nodes[ref.node].type in ("llm", "python"):
        return output.name, ref.node
    return output.name, None


class FlowStream(AsyncIterator[str]):
    """Text deltas of one run, then its :class:`FlowResult` from :meth:`result`.

    Use it as an async context manager (or call :meth:`aclose`): leaving early cancels the run
    and the LLM call in flight. A consumer task cancelled while waiting for a delta cancels the
    run too, so a client that disconnects never leaves an LLM call behind.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._task: asyncio.Task[FlowResult] | None = None
        self._ended = False

    @property
    def streamed_output(self) -> str | None:
        return self._run.streamed_output

    @property
    def llm_calls(self) -> list[LlmCall]:
        """The LLM calls finished so far (all of them once the run is over)."""
        return list(self._run.llm_calls)

    @property
    def time_to_first_token_ms(self) -> float | None:
        first = self._run.first_token_at
        return (first - self._run.started) * 1000 if first is not None else None

    @property
    def cancelled(self) -> bool:
        return self._task is not None and self._task.cancelled()

    def _start(self) -> asyncio.Task[FlowResult]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run.execute(), name="flow-run")
        return self._task

    def __aiter__(self) -> FlowStream:
        return self

    async def __anext__(self) -> str:
        if self._ended:  # also after aclose(): a closed stream never starts its run
            raise StopAsyncIteration
        task = self._start()
        assert self._run.deltas is not None
        try:
            item = await self._run.deltas.get()
        except asyncio.CancelledError:
            task.cancel()
            raise
        if item is END:
            self._ended = True
            await task  # raises the run's error, if it failed
            raise StopAsyncIteration
        return item

    async def result(self) -> FlowResult:
        """The finished run (waits for it; raises its error, CancelledError if it was cancelled)."""
        if self._ended and self._task is None:
            raise RuntimeError("the stream was closed before its run started")
        return await self._start()

    async def aclose(self) -> None:
        """Cancel the run if it is still going; safe to call more than once."""
        task = self._task
        self._ended = True
        if task is None:
            return
        if not task.done():
            task.cancel()
            # wait() rather than await: the run's own outcome is not the closer's concern, but
            # the closer being cancelled still is.
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # read, so an unread failure is not reported as "never retrieved"

    async def __aenter__(self) -> FlowStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
