"""``promptpulse flows``: the deployed flows' Python dependencies (services/cli/flows_install.py).

Only the parser lives here: `promptpulse --help` must not import the flow runtime or pydantic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PIP_OPTIONS_HELP = "passed to pip as it is (e.g. an offline wheel folder)"


def register(sub: argparse._SubParsersAction) -> None:
    flows = sub.add_parser("flows", help="manage deployed flows' Python dependencies")
    commands = flows.add_subparsers(dest="flows_command", required=True, metavar="COMMAND")
    install = commands.add_parser(
        "install",
        help="install every deployed flow's requirements, constrained to PromptPulse's own versions",
    )
    install.add_argument(
        "dir",
        nargs="?",
        type=Path,
        help="a deployments folder (default: the services' PROMPTPULSE_DEPLOYMENTS_DIR) or one flow folder",
    )
    install.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of the environment the services run in (default: this one)",
    )
    install.add_argument("--dry-run", action="store_true", help="show what would be installed; install nothing")
    install.add_argument("--find-links", action="append", default=[], metavar="DIR", help=PIP_OPTIONS_HELP)
    install.add_argument("--no-index", action="store_true", help=PIP_OPTIONS_HELP)
    install.add_argument("--index-url", help=PIP_OPTIONS_HELP)
    install.set_defaults(func=_install)


def _install(args: argparse.Namespace) -> int:
    from services.cli.flows_install import install

    return install(args)
