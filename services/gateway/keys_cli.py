"""``promptpulse keys create|list|revoke DEPLOYMENT``: manage a deployment's API keys.

Keys are written to the deployment's ``api_keys_file`` only (atomically, mode 0600), never to
the hand-written deployment file. ``create`` prints the new key once, on stdout alone so that
``KEY=$(promptpulse keys create demo)`` works; only its hash is stored. Running gateways notice
the changed file within ``PROMPTPULSE_GATEWAY__KEYS_RELOAD_INTERVAL_SECONDS`` (or on SIGHUP).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from shared.apikeys import KEY_ID_PATTERN, new_api_key_record
from shared.demo_key import find_deployment_file
from shared.deployments import (
    Deployment,
    DeploymentConfigError,
    load_api_keys_file,
    load_deployment,
    save_api_keys_file,
)
from shared.settings import ServiceSettings, SettingsError, load_settings


class KeysError(Exception):
    """A keys command cannot do what was asked; the message says why and what to do."""


def find_deployment(deployments_dir: Path, name: str) -> Deployment:
    path = find_deployment_file(deployments_dir, name)
    if path is None:
        raise KeysError(f"no deployment named {name!r} in {deployments_dir}")
    return load_deployment(path, check_flow=False)


def _keys_file(deployment: Deployment) -> Path:
    if deployment.api_keys_file is None:
        raise KeysError(
            f"deployment {deployment.name!r} has no api_keys_file: add e.g. "
            f"`api_keys_file: keys/{deployment.name}.yaml` to {deployment.source} (keys are written "
            "there, never into the deployment file itself)"
        )
    return deployment.api_keys_file


def create(deployments_dir: Path, name: str, key_id: str | None, rate_limit: int | None) -> tuple[str, str]:
    """(the new key, its id). The key is returned once and never stored."""
    deployment = find_deployment(deployments_dir, name)
    path = _keys_file(deployment)
    if key_id is not None and not re.match(KEY_ID_PATTERN, key_id):
        raise KeysError(f"key id {key_id!r} must be 1-63 letters, digits or _.- starting with a letter or digit")
    if key_id is not None and any(k.id == key_id for k in deployment.api_keys):
        raise KeysError(f"deployment {name!r} already has a key {key_id!r}: revoke it first or pick another id")
    key, record = new_api_key_record(key_id, rate_limit)
    save_api_keys_file(path, [*load_api_keys_file(path), record])
    return key, record.id


def revoke(deployments_dir: Path, name: str, key_id: str) -> None:
    deployment = find_deployment(deployments_dir, name)
    path = _keys_file(deployment)
    stored = load_api_keys_file(path)
    kept = [r for r in stored if r.id != key_id]
    if len(kept) == len(stored):
        if any(k.id == key_id for k in deployment.api_keys):
            raise KeysError(f"key {key_id!r} is written in {deployment.source} itself: remove it there")
        raise KeysError(f"deployment {name!r} has no key {key_id!r}")
    save_api_keys_file(path, kept)


def list_keys(deployments_dir: Path, name: str) -> list[tuple[str, str, str, str]]:
    """(id, created, rate limit, where) per key."""
    deployment = find_deployment(deployments_dir, name)
    in_file = {r.id for r in load_api_keys_file(deployment.api_keys_file)} if deployment.api_keys_file else set()
    return [
        (k.id, k.created.isoformat(), str(k.rate_limit_per_minute or "-"),
         "api_keys_file" if k.id in in_file else "deployment file")
        for k in deployment.api_keys
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptpulse keys", description="Manage a deployment's API keys.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    make = sub.add_parser("create", help="make a key and print it once")
    make.add_argument("deployment")
    make.add_argument("--id", dest="key_id", help="name to list and revoke it by (default: random)")
    make.add_argument("--rate-limit", type=int, metavar="PER_MINUTE", help="requests per minute allowed with it")
    show = sub.add_parser("list", help="list a deployment's keys (ids, never keys)")
    show.add_argument("deployment")
    drop = sub.add_parser("revoke", help="remove a key")
    drop.add_argument("deployment")
    drop.add_argument("key_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folder = load_settings(ServiceSettings).deployments_dir
        if args.action == "create":
            if args.rate_limit is not None and args.rate_limit < 1:
                raise KeysError("--rate-limit must be at least 1")
            key, key_id = create(folder, args.deployment, args.key_id, args.rate_limit)
            print(key)
            print(f"key {key_id!r} created for {args.deployment!r}; it is shown only now, store it safely",
                  file=sys.stderr)
        elif args.action == "list":
            rows = list_keys(folder, args.deployment)
            if not rows:
                print(f"deployment {args.deployment!r} has no keys", file=sys.stderr)
            for row in rows:
                print("\t".join(row))
        else:
            revoke(folder, args.deployment, args.key_id)
            print(f"key {args.key_id!r} of {args.deployment!r} revoked", file=sys.stderr)
    except (KeysError, DeploymentConfigError, SettingsError, OSError) as exc:
        print(f"promptpulse keys: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
