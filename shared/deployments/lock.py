"""``python -m shared.deployments.lock DEPLOYMENTS_DIR``: record the evaluator labels of every
deployment in the folder that its lock file does not record yet (lockfile.py). A recorded label
whose content changed is reported, never rewritten; the exit status is then 1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.deployments.errors import DeploymentConfigError, display_path
from shared.deployments.loader import deployment_files, load_deployment
from shared.deployments.lockfile import update_lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.deployments.lock", description="Record new evaluator labels in each deployment's lock file.")
    parser.add_argument("deployments_dir", type=Path)
    args = parser.parse_args(argv)
    status = 0
    for file in deployment_files(args.deployments_dir):
        try:
            deployment = load_deployment(file, check_flow=False)
            for line in update_lock(file, deployment):
                print(f"{display_path(file)}: locked {line}")
        except DeploymentConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
