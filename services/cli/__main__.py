"""``python -m services.cli ...`` runs the `promptpulse` command (the tests run it this way)."""

import sys

from services.cli import main

sys.exit(main())
