"""The `promptpulse` command: one entry point for every service and tool.

Each subcommand imports only what it needs, so `promptpulse --help` stays fast and a service
does not drag the others' dependencies into its process.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import subprocess
import sys
from pathlib import Path

from shared.settings import ServiceSettings, SettingsError, load_settings

REPO_DIR = Path(__file__).resolve().parent.parent


# Long-running services: `promptpulse NAME` runs `services.NAME.__main__.main()`.
SERVICES = {
    "gateway": "serve deployed flows as authenticated endpoints (port 8080)",
    "processor": "sample completed requests and have LLM judges score them",
    "aggregator": "ingest events into PostgreSQL; rollups, monitors, alerts, query API (port 8081)",
    "llmsim": "run the OpenAI-compatible LLM simulator (a test tool, port 8082)",
}


def _service(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"services.{args.command}.__main__")
    return module.main()


def _keys(args: argparse.Namespace) -> int:
    from services.gateway.keys_cli import main as keys_main

    return keys_main(args.rest)


def _migrate(args: argparse.Namespace) -> int:
    from services.aggregator.db.migrate import migrate

    settings = load_settings(ServiceSettings)
    applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _topics(args: argparse.Namespace) -> int:
    from shared.topics import Topics, ensure_topics

    settings = load_settings(ServiceSettings)
    topics = Topics.from_settings(settings)
    result = asyncio.run(ensure_topics(settings, topics.all()))
    print(f"topics: {len(result.created)} created, {len(result.existing)} already there")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _stack(args: argparse.Namespace) -> int:
    script = REPO_DIR / "deploy" / "local" / "stack.sh"
    if not script.exists():
        print(f"{script} not found: `promptpulse {args.command}` works from a source checkout", file=sys.stderr)
        return 2
    return subprocess.call(["bash", str(script), args.command], env=os.environ.copy())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptpulse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in SERVICES.items():
        sub.add_parser(name, help=text).set_defaults(func=_service)
    keys = sub.add_parser("keys", help="manage a deployment's API keys (create | list | revoke)", add_help=False)
    keys.add_argument("rest", nargs=argparse.REMAINDER)
    keys.set_defaults(func=_keys)
    sub.add_parser("migrate", help="apply pending database schema migrations").set_defaults(func=_migrate)
    sub.add_parser("topics", help="create the Kafka topics (idempotent)").set_defaults(func=_topics)
    for name, text in (
        ("up", "start the local stack (Kafka, PostgreSQL, services)"),
        ("down", "stop what `up` started"),
        ("status", "show what is running"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=_stack)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"promptpulse {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
