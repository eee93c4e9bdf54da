"""``python -m services.llmsim``: run the simulator with settings from the environment."""

from __future__ import annotations

import sys

from services.llmsim.app import run_forever
from services.llmsim.settings import LlmsimSettings
from shared.entrypoint import run_service


def main() -> int:
    return run_service("llmsim", LlmsimSettings, run_forever)


if __name__ == "__main__":
    sys.exit(main())
