"""``python -m services.llmsim``: run the simulator with settings from the environment."""

from __future__ import annotations

import logging
import sys

from services.llmsim.app import run_forever
from services.llmsim.settings import LlmsimSettings
from shared.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings(LlmsimSettings)
    except SettingsError as exc:
        print(f"llmsim: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=settings.telemetry.log_level,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
    run_forever(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
