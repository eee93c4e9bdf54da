"""Output and running for the CLI: rich consoles on stdout and stderr, and the asyncio runner.

Results go to stdout; progress, notices and errors to stderr, so `promptpulse ... > file` keeps
only the result. Rich writes colours only to a terminal; piped output is plain text. Commands
that run until stopped (``--follow``, ``alerts subscribe``, ``tail``) treat Ctrl-C and SIGTERM
as the normal way to stop: they clean up and exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    # Piped output is kept wide enough for the tables rather than wrapped at 80 columns.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def notice(text: str) -> None:
    """One line on stderr, at once (no markup)."""
    print(text, file=sys.stderr, flush=True)


def emit(text: str) -> None:
    """One line on stdout, flushed at once so a pipe sees it line by line."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_async(factory: Callable[[], Awaitable[int]], *, stop_ok: bool = False) -> int:
    """Run a command's coroutine. SIGTERM cancels it like Ctrl-C; a command that runs until
    stopped (``stop_ok``) then exits 0, others 130."""

    async def main() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        except (NotImplementedError, RuntimeError):  # not on the main thread (tests calling main())
            pass
        return await factory()

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0 if stop_ok else 130
