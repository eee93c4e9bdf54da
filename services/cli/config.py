"""Where the CLI finds the services and its keys, and how it fails.

Every command that talks to a service goes through here, so the rules are the same everywhere:

- URLs: the command line (``--gateway-url``, ``--api-url``), else the environment
  (``PROMPTPULSE_GATEWAY_URL``, ``PROMPTPULSE_API_URL``), else the local stack's defaults.
- Keys: the command line or the environment, else the files ``make up`` writes in
  ``.local/keys/``. A key is only ever sent, never printed; messages name where it came from.
- Failures are :class:`CliError`: one line on stderr and an exit code from the table below,
  never a traceback.

This module imports nothing heavy: it is loaded for ``promptpulse --help``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]
KEYS_DIR = REPO_DIR / ".local" / "keys"

# Exit codes (docs/cli.md).
EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # eval run: a threshold was missed or a row failed
EXIT_USAGE = 2  # bad arguments, settings or data; a key missing or refused
EXIT_UNREACHABLE = 3  # a service or Kafka cannot be reached
EXIT_NOT_FOUND = 4  # no such deployment, trace, run, monitor or topic
EXIT_SERVICE_ERROR = 5  # the service answered with another error; eval judging timed out

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
DEFAULT_API_URL = "http://127.0.0.1:8081"
START_HINT = "is the stack running? Start it with `make up`"

GATEWAY_URL_ENV = "PROMPTPULSE_GATEWAY_URL"
API_URL_ENV = "PROMPTPULSE_API_URL"
GATEWAY_KEY_ENV = "PROMPTPULSE_API_KEY"
DEMO_KEY_ENV = "PROMPTPULSE_DEMO_API_KEY"
READ_KEY_ENV = "PROMPTPULSE_API_READ_KEY"
ADMIN_KEY_ENV = "PROMPTPULSE_API_ADMIN_KEY"
DEMO_DEPLOYMENT = "demo"


class CliError(Exception):
    """A command cannot do what was asked; ``str()`` says why and what to do."""

    def __init__(self, message: str, code: int = EXIT_SERVICE_ERROR, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status  # the HTTP status behind it, when there was one


@dataclass(frozen=True)
class Key:
    """A key and a description of where it came from (for messages: never the key itself)."""

    value: str
    source: str

    def __repr__(self) -> str:  # a key must not reach a log through a repr
        return f"Key(source={self.source!r})"


def _clean_url(url: str, what: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{what} must start with http:// or https:// (got {url!r})", EXIT_USAGE)
    return url


def gateway_url(args: argparse.Namespace) -> str:
    url = getattr(args, "gateway_url", None) or os.environ.get(GATEWAY_URL_ENV) or DEFAULT_GATEWAY_URL
    return _clean_url(url, f"the gateway URL (--gateway-url / {GATEWAY_URL_ENV})")


def api_url(args: argparse.Namespace) -> str:
    url = getattr(args, "api_url", None) or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    return _clean_url(url, f"the API URL (--api-url / {API_URL_ENV})")


def _key_file(name: str, keys_dir: Path | None = None) -> Key | None:
    path = (keys_dir or KEYS_DIR) / name
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Key(text, str(path)) if text else None


def _env_key(name: str, environ: dict[str, str] | None = None) -> Key | None:
    value = ((os.environ if environ is None else environ).get(name) or "").strip()
    return Key(value, name) if value else None


def gateway_key_hint(deployment: str) -> str:
    hint = f"pass --key or set {GATEWAY_KEY_ENV} to a key of deployment {deployment!r}"
    if deployment == DEMO_DEPLOYMENT:
        hint += f" (for the demo: {DEMO_KEY_ENV}, or the file .local/keys/demo.key that `make up` writes)"
    return hint


def gateway_key(args: argparse.Namespace, deployment: str, *, environ: dict[str, str] | None = None,
                keys_dir: Path | None = None) -> Key:
    """The gateway key for ``deployment``: --key, $PROMPTPULSE_API_KEY, then for ``demo``
    $PROMPTPULSE_DEMO_API_KEY or .local/keys/demo.key (shared/demo_key.py)."""
    given = (getattr(args, "key", None) or "").strip()
    if given:
        return Key(given, "--key")
    found = _env_key(GATEWAY_KEY_ENV, environ)
    if found is None and deployment == DEMO_DEPLOYMENT:
        found = _env_key(DEMO_KEY_ENV, environ) or _key_file("demo.key", keys_dir)
    if found is None:
        raise CliError(f"no API key for deployment {deployment!r}: {gateway_key_hint(deployment)}", EXIT_USAGE)
    return found


def api_key_hint(admin: bool) -> str:
    env, name = (ADMIN_KEY_ENV, "api-admin.key") if admin else (READ_KEY_ENV, "api-read.key")
    return f"set {env} (or write it to .local/keys/{name}, as `make up` does)"


def api_key(*, admin: bool = False, environ: dict[str, str] | None = None, keys_dir: Path | None = None) -> Key:
    """The query API's read key (or admin key): the environment, else ``.local/keys/``."""
    env, name = (ADMIN_KEY_ENV, "api-admin.key") if admin else (READ_KEY_ENV, "api-read.key")
    found = _env_key(env, environ) or _key_file(name, keys_dir)
    if found is None:
        what = "admin" if admin else "read"
        raise CliError(f"no query API {what} key: {api_key_hint(admin)}", EXIT_USAGE)
    return found


def add_gateway_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway")
    group.add_argument("--gateway-url", metavar="URL",
                       help=f"gateway base URL (env {GATEWAY_URL_ENV}, default {DEFAULT_GATEWAY_URL})")
    group.add_argument("--key", metavar="KEY",
                       help=f"the deployment's API key (env {GATEWAY_KEY_ENV}; for demo also "
                            f"{DEMO_KEY_ENV} or .local/keys/demo.key)")


def add_api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument_group("query API").add_argument(
        "--api-url", metavar="URL",
        help=f"aggregator query API base URL (env {API_URL_ENV}, default {DEFAULT_API_URL}); "
             f"keys from {READ_KEY_ENV} / {ADMIN_KEY_ENV} or .local/keys/",
    )
