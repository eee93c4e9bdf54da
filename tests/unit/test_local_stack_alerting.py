"""`make up`'s banner (deploy/local/stack.sh banner) says where monitor alerts go: the
Alertmanager URLs set, without any password they hold, or how to set one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LOCAL_STACK = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.sh"
SETTING = "PROMPTPULSE_AGGREGATOR__MONITORS__ALERTMANAGER__URLS"


def _banner(tmp_path: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_")}
    # llmsim's port points at nothing: the drift line says "see ..." without waiting for it.
    env |= {"PROMPTPULSE_LOCAL_DIR": str(tmp_path / "local"), "PROMPTPULSE_VENV": sys.prefix,
            "PROMPTPULSE_LLMSIM__PORT": "9", **extra}
    done = subprocess.run(["bash", str(LOCAL_STACK), "banner"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_without_alertmanager_the_banner_says_how_to_point_at_one(tmp_path: Path) -> None:
    text = _banner(tmp_path)
    assert "Alerts to:  none besides this terminal" in text
    assert f"{SETTING}=http://127.0.0.1:9093" in text


def test_with_alertmanager_the_banner_names_it_without_its_password(tmp_path: Path) -> None:
    text = _banner(tmp_path, **{SETTING: "https://ops:s3cret@am-0.example.com:9093/am,http://am-1:9093"})
    assert "Alerts to:  Alertmanager at https://am-0.example.com:9093,http://am-1:9093" in text
    assert "s3cret" not in text
    assert "Alertmanager at http://am-2:9093\n" in _banner(tmp_path, **{SETTING: '["http://am-2:9093"]'})


def test_alerts_link_to_the_local_dashboard(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_")}
    env |= {"PROMPTPULSE_LOCAL_DIR": str(tmp_path / "local"), "PROMPTPULSE_VENV": sys.prefix}
    done = subprocess.run(["bash", str(LOCAL_STACK), "env", "aggregator"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert "PROMPTPULSE_AGGREGATOR__PUBLIC_URL" in done.stdout.split()
