"""How a code evaluator's function is called (in the judging task, bounded by its timeout) and
how a request's several evaluators run together (concurrently, stopped together)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from services.processor.evaluation.code_threads import CodeThreads
from services.processor.evaluation.kinds.code import CodeEvaluator
from services.processor.evaluation.pipeline import _run_all
from services.processor.evaluation.protocol import Failed, RequestFields, Scored, StructFields
from shared.deployments import EvaluatorConfig
from shared.events.builders import dict_to_struct, new_meta
from shared.events.messages import EvaluationErrorType


def _request() -> RequestFields:
    meta = new_meta(request_id="r1", deployment="shop", request_start_time=None)
    return RequestFields(StructFields(dict_to_struct({"q": "Why?"})), StructFields(dict_to_struct({"a": "Because."})), meta)


@pytest.fixture
def threads() -> Any:
    pool = ThreadPoolExecutor(max_workers=2)
    yield CodeThreads(pool, 2)
    pool.shutdown(wait=False, cancel_futures=True)


def _evaluator(tmp_path: Path, function: Any, threads: CodeThreads, timeout: float = 5) -> CodeEvaluator:
    (tmp_path / "checks.py").write_text("def f(answer):\n    return 1\n")  # the schema reads the file
    config = EvaluatorConfig(
        name="check", kind="code", code=f"{tmp_path / 'checks.py'}:f", scale="float", timeout_seconds=timeout,
    )
    return CodeEvaluator(config, function, {"answer": "outputs.a"}, threads)


async def test_an_async_code_evaluator_runs_in_the_judging_task(tmp_path: Path, threads: CodeThreads) -> None:
    # Awaited where it is called, under asyncio.timeout: no task of its own per call (wait_for
    # made one for every judged request).
    tasks: list[Any] = []

    async def check(answer: str) -> float:
        tasks.append(asyncio.current_task())
        return 1.0 if answer == "Because." else 0.0

    evaluator = _evaluator(tmp_path, check, threads)
    outcomes = await evaluator.evaluate(_request())
    assert outcomes == [Scored("check", 1.0, "", "")]
    assert tasks == [asyncio.current_task()]


async def test_an_async_code_evaluator_that_hangs_times_out(tmp_path: Path, threads: CodeThreads) -> None:
    async def check(answer: str) -> float:
        await asyncio.sleep(30)
        return 1.0

    evaluator = _evaluator(tmp_path, check, threads, timeout=0.1)
    [outcome] = await asyncio.wait_for(evaluator.evaluate(_request()), 5)
    assert isinstance(outcome, Failed)
    assert outcome.error_type == EvaluationErrorType.EVALUATION_ERROR_TYPE_TIMEOUT


@pytest.mark.parametrize(
    ("takes", "limit"),
    [(0.0, 0.005), (0.0, 0.015), (0.07, 0.1)],
    ids=["returns-at-once-5ms", "returns-at-once-15ms", "70ms-of-100ms"],
)
async def test_a_code_function_that_returns_within_its_timeout_is_scored(
    tmp_path: Path, threads: CodeThreads, takes: float, limit: float
) -> None:
    # Calls are handed to threads and back at a 20 ms tick: that wait is not the function's,
    # so a timeout shorter than a tick, or one the tick's lag would overrun, is still met.
    def check(answer: str) -> float:
        if takes:
            time.sleep(takes)
        return 1.0

    evaluator = _evaluator(tmp_path, check, threads, timeout=limit)
    for _ in range(5):
        outcomes = await asyncio.wait_for(evaluator.evaluate(_request()), 5)
        assert outcomes == [Scored("check", 1.0, "", "")]


async def test_a_code_function_that_hangs_times_out(tmp_path: Path, threads: CodeThreads) -> None:
    release = threading.Event()

    def check(answer: str) -> float:
        release.wait(30)
        return 1.0

    evaluator = _evaluator(tmp_path, check, threads, timeout=0.05)
    try:
        [outcome] = await asyncio.wait_for(evaluator.evaluate(_request()), 5)
    finally:
        release.set()
    assert isinstance(outcome, Failed)
    assert outcome.error_type == EvaluationErrorType.EVALUATION_ERROR_TYPE_TIMEOUT


class _Waiting:
    """An evaluator that records when it starts and waits until released (or cancelled)."""

    def __init__(self, name: str, release: asyncio.Event, log: list[str]) -> None:
        self.name, self.version, self.metrics = name, "v", (name,)
        self._release, self._log = release, log

    async def evaluate(self, request: Any) -> list[Any]:
        self._log.append(f"{self.name} started")
        try:
            await self._release.wait()
        except asyncio.CancelledError:
            self._log.append(f"{self.name} cancelled")
            raise
        return [Scored(self.name, 1.0, "")]


async def test_a_requests_evaluators_run_together_and_stop_together() -> None:
    release, log = asyncio.Event(), []
    evaluators = tuple(_Waiting(name, release, log) for name in ("a", "b", "c"))
    running = asyncio.ensure_future(_run_all(evaluators, _request()))  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(log) == ["a started", "b started", "c started"]  # all at once, not in turn
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(log[3:]) == ["a cancelled", "b cancelled", "c cancelled"]  # none left running

    release.set()
    log.clear()
    results = await asyncio.wait_for(_run_all(evaluators, _request()), 5)  # type: ignore[arg-type]
    assert [[outcome.metric for outcome in result] for result in results] == [["a"], ["b"], ["c"]]
