"""The operator's subcommands: run a service, manage keys, migrate, create topics, and the
local stack (``up``, ``down``, ``status``), as before the CLI became a package."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from services.cli.config import REPO_DIR

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


def _service(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"services.{args.command}.__main__")
    return module.main()


def _keys(args: argparse.Namespace) -> int:
    from services.gateway.keys_cli import main as keys_main

    return keys_main(args.rest)


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from services.aggregator.db.migrate import migrate
    from shared.settings import ServiceSettings, load_settings

    settings = load_settings(ServiceSettings)
    applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _topics(args: argparse.Namespace) -> int:
    import asyncio

    from shared.settings import ServiceSettings, load_settings
    from shared.topics import Topics, ensure_topics

    settings = load_settings(ServiceSettings)
    topics = Topics.from_settings(settings)
    result = asyncio.run(ensure_topics(settings, topics.all()))
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
        sub.add_parser(name, help=text).set_defaults(func=_service)
    keys = sub.add_parser("keys", help="manage a deployment's API keys (create | list | revoke)", add_help=False)
    keys.add_argument("rest", nargs=argparse.REMAINDER)
    keys.set_defaults(func=_keys)
    sub.add_parser("migrate", help="apply pending database schema migrations").set_defaults(func=_migrate)
    sub.add_parser("topics", help="create the Kafka topics (idempotent)").set_defaults(func=_topics)
    for name, text in STACK_COMMANDS:
        sub.add_parser(name, help=text).set_defaults(func=_stack)
