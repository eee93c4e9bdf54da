"""The `promptpulse` command: one entry point for every service and tool.

Each subcommand lives in its own module here (``invoke``, ``metrics``, ``alerts``, ...) and
imports what it needs only when it runs, so `promptpulse --help` stays fast and a service does
not drag the others' dependencies into its process. Errors a user can act on (a service down, a
key missing, a deployment unknown) end the command with one line on stderr and an exit code
(docs/cli.md), never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from services.cli import (
    alerts,
    annotate,
    compare,
    evalrun,
    flows,
    invoke,
    metrics,
    monitors,
    ops,
    request,
    requests,
    tail,
    trace,
)
from services.cli.config import EXIT_USAGE, CliError
from services.cli.ops import SERVICES

__all__ = ["SERVICES", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptpulse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ops.register(sub)
    for module in (invoke, metrics, compare, requests, request, trace, monitors, alerts, tail, evalrun, flows,
                   annotate):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"promptpulse {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from shared.settings import SettingsError

        if isinstance(exc, SettingsError):
            print(f"promptpulse {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
