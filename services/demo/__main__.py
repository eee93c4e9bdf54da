"""``python -m services.demo traffic [flags]``: run the demo's traffic generator in the foreground.

Every flag has an environment variable (``PROMPTPULSE_DEMO__RATE`` for ``--rate``, ...); a flag
wins. The gateway is ``PROMPTPULSE_GATEWAY_URL`` (default http://127.0.0.1:8080); the key is
``PROMPTPULSE_DEMO_API_KEY``, else the demo key file the gateway writes. SIGINT or SIGTERM stops
it after the requests in flight (at most 5 s) with a last status line; exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from services.demo.settings import (
    DemoSettings,
    NoApiKey,
    TrafficSection,
    key_source,
    proxy_key_source,
)
from services.demo.traffic import TrafficGenerator
from shared.settings import SettingsError, load_settings

# flag -> TrafficSection field
_FLAGS = {
    "deployment": (str, "deployment the questions go to (default demo)"),
    "rate": (float, "requests per second (default 4)"),
    "stream_share": (float, "share of streamed requests, 0-1 (default 0.25)"),
    "feedback_share": (float, "share of answers rated, 0-1 (default 0.05)"),
    "status_every_seconds": (float, "seconds between status lines (default 10)"),
    "max_in_flight": (int, "requests waiting for an answer at most (default 64)"),
    "request_timeout_seconds": (float, "timeout of one request (default 60)"),
    "duration_seconds": (float, "stop after this many seconds (default: run until stopped)"),
    "seed": (int, "seed of the random draws, for a repeatable sequence"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    traffic = sub.add_parser("traffic", help="send a steady stream of demo questions to the gateway")
    traffic.add_argument("--gateway-url", help="the gateway (default $PROMPTPULSE_GATEWAY_URL or "
                         "http://127.0.0.1:8080)")
    traffic.add_argument("--key-file", type=Path, help="file holding the API key (default: "
                         "$PROMPTPULSE_DEMO_API_KEY, else the demo key file)")
    for name, (kind, text) in _FLAGS.items():
        traffic.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    return parser


def _settings(args: argparse.Namespace) -> tuple[DemoSettings, TrafficSection]:
    settings = load_settings(DemoSettings)
    flags = {name: getattr(args, name) for name in _FLAGS if getattr(args, name) is not None}
    try:
        section = TrafficSection.model_validate({**settings.demo.model_dump(), **flags})
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                             for e in exc.errors())
        raise SettingsError(f"invalid flags: {problems}") from None
    return settings, section


async def _traffic(args: argparse.Namespace) -> int:
    settings, section = _settings(args)
    generator = TrafficGenerator(section, args.gateway_url or settings.gateway_url,
                                 key_source(settings, args.key_file), proxy_keys=proxy_key_source(settings))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, generator.stop)
    await generator.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_traffic(args))
    except (SettingsError, NoApiKey) as exc:
        print(f"demo {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
