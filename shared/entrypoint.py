"""The start of every service's ``python -m services.NAME`` (and ``promptpulse NAME``).

Settings from the environment, the project's logs, the chatty libraries turned down, the event
loop chosen (uvloop unless configured otherwise, shared/eventloop.py), then the service runs. A
start-up the service refuses (invalid settings, a bad deployment file, a topic prefix that does
not match) ends with exit status 2 and the problem on stderr (each bad field or file named), never
a traceback: an operator reads it, and a supervisor can tell it from a crash.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

from shared.eventloop import use_event_loop
from shared.logs import setup_logging
from shared.settings import ServiceSettings, SettingsError, load_settings

S = TypeVar("S", bound=ServiceSettings)

# The openai client and its transports log every LLM call at INFO: a line per call is noise (and
# CPU) at service volumes, and the spans and /metrics carry the same facts.
LLM_CLIENT_LOGGERS = ("httpx", "httpx2", "openai")

EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT


def run_service(
    name: str,
    settings_type: type[S],
    serve: Callable[[S], int | None],
    *,
    refusals: tuple[type[Exception], ...] = (),
    quiet_loggers: Iterable[str] = (),
) -> int:
    """Load ``settings_type``, set up logging as service ``name``, and return what ``serve``
    returns (``None`` is 0). ``refusals``: the exceptions that mean start-up was refused (exit
    2); ``quiet_loggers``: libraries that log per call or per start at INFO, kept at WARNING."""
    try:
        settings = load_settings(settings_type)
    except SettingsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    setup_logging(name, settings.telemetry)
    quiet = max(logging.WARNING, logging.getLogger().level)
    for logger in quiet_loggers:
        logging.getLogger(logger).setLevel(quiet)
    use_event_loop(settings.event_loop)
    logging.getLogger(__name__).debug("%s starts on the %s event loop", name, settings.event_loop)
    refused: tuple[type[Exception], ...] = (SettingsError, *refusals)
    try:
        status = serve(settings)
    except refused as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:  # Ctrl-C before the service took SIGINT over
        return EXIT_INTERRUPTED
    return status or 0
