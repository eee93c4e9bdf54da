"""The operator's subcommands: run a service, manage keys, migrate, create topics, and the
local stack (``up``, ``down``, ``status``), as before the CLI became a package."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from services.cli.config import EXIT_USAGE, REPO_DIR, CliError

# Long-running services: `promptpulse NAME` runs `services.NAME.__main__.main()`.
SERVICES = {
    "gateway": "serve deployed flows as authenticated endpoints (port 8080)",
    "processor": "sample completed requests and have LLM judges score them",
    "aggregator": "ingest events into PostgreSQL; rollups, monitors, alerts, query API (port 8081)",
    "llmsim": "run the OpenAI-compatible LLM simulator (a test tool, port 8082)",
}

STACK_COMMANDS = (
    ("up", "start the local stack (Kafka, PostgreSQL, services)"),
    ("down", "stop what `up` started"),
    ("status", "show what is running"),
)


def _entry_point(service: str) -> ModuleType:
    """``services.SERVICE.__main__``: the one module of a service the CLI may import (the import
    contracts in pyproject.toml hold every other module of it out of reach)."""
    try:
        return importlib.import_module(f"services.{service}.__main__")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"services.{service}", f"services.{service}.__main__"):
            raise
        # A production image is built without the test tools (deploy/Dockerfile, WITH_TEST_TOOLS).
        raise CliError(f"{service} is not installed here (a test tool, left out of production "
                       "images; install from a source checkout)", EXIT_USAGE) from None


def _service(args: argparse.Namespace) -> int:
    if getattr(args, "workers", None) is not None:
        os.environ["PROMPTPULSE_GATEWAY__WORKERS"] = str(args.workers)  # read as the gateway's setting
    return _entry_point(args.command).main()


def _keys(args: argparse.Namespace) -> int:
    return _entry_point("gateway").keys(args.rest)


def _migrate(args: argparse.Namespace) -> int:
    return _entry_point("aggregator").migrate_schema()


def _topics(args: argparse.Namespace) -> int:
    import asyncio

    from shared.settings import ServiceSettings, load_settings
    from shared.topics import REJUDGE_PROGRESS_CONFIGS, Topics, ensure_topics

    settings = load_settings(ServiceSettings)
    topics = Topics.from_settings(settings)
    # The re-judge progress topic is compacted (the state re-judges resume from); the others not.
    progress = asyncio.run(ensure_topics(settings, [topics.rejudge_progress], 1, configs=REJUDGE_PROGRESS_CONFIGS))
    result = asyncio.run(ensure_topics(settings, [t for t in topics.all() if t != topics.rejudge_progress]))
    result.created += progress.created
    result.existing += progress.existing
    print(f"topics: {len(result.created)} created, {len(result.existing)} already there")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _stack(args: argparse.Namespace) -> int:
    import subprocess

    script = REPO_DIR / "deploy" / "local" / "stack.sh"
    if not script.exists():
        print(f"{script} not found: `promptpulse {args.command}` works from a source checkout", file=sys.stderr)
        return 2
    return subprocess.call(["bash", str(script), args.command], env=os.environ.copy())


def register(sub: argparse._SubParsersAction) -> None:
    for name, text in SERVICES.items():
        service = sub.add_parser(name, help=text)
        service.set_defaults(func=_service)
        if name == "gateway":
            service.add_argument("--workers", type=int, metavar="N",
                                 help="N gateway processes on one port (SO_REUSEPORT), one per core (docs/gateway.md)")
    keys = sub.add_parser("keys", help="manage a deployment's API keys (create | list | revoke)", add_help=False)
    keys.add_argument("rest", nargs=argparse.REMAINDER)
    keys.set_defaults(func=_keys)
    sub.add_parser("migrate", help="apply pending database schema migrations").set_defaults(func=_migrate)
    sub.add_parser("topics", help="create the Kafka topics (idempotent)").set_defaults(func=_topics)
    for name, text in STACK_COMMANDS:
        sub.add_parser(name, help=text).set_defaults(func=_stack)
