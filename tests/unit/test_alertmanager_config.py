"""deploy/alertmanager/alertmanager.yml passes ``amtool check-config`` (Debian's
prometheus-alertmanager ships amtool; .ci/run installs it), and routes on what PromptPulse sends."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from services.aggregator.monitors.alertmanager import alert_labels, alert_name
from shared.deployments import Monitor

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"


def _amtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    amtool = shutil.which("amtool")
    assert amtool, "amtool not found: apt-get install prometheus-alertmanager (.ci/run does)"
    return subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)


def test_the_example_configuration_passes_amtool() -> None:
    result = _amtool_check(CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_refuses_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(CONFIG.read_text().replace("receiver: pagerduty", "receiver: no-such-receiver"))
    result = _amtool_check(broken)
    assert result.returncode != 0
    assert "no-such-receiver" in result.stdout + result.stderr


def _matchers(config: dict) -> list[str]:
    found = [m for route in config["route"]["routes"] for m in route["matchers"]]
    for rule in config["inhibit_rules"]:
        found += rule["source_matchers"] + rule["target_matchers"]
    return found


def test_the_routes_match_the_labels_promptpulse_sends() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    names = {alert_name(Monitor.model_validate({"id": "m", "statistic": s, "threshold": 3 if s == "average" else 0.5,
                                                "window": "1m",
                                                "metric": "relevance" if s in ("average", "pass_rate") else None}))
             for s in ("average", "pass_rate", "error_rate", "latency_p95", "tokens_per_hour", "cost_per_hour")}
    sent = set(alert_labels(Monitor.model_validate({"id": "m", "statistic": "error_rate", "threshold": 0.5,
                                                    "window": "1m"}), "demo"))
    for matcher in _matchers(config):
        label, _, pattern = re.match(r'^(\w+)(=~|=)"(.*)"$', matcher).groups()
        assert label in sent, f"{matcher}: PromptPulse sends no {label} label"
        if label == "alertname":
            assert any(re.fullmatch(pattern, name) for name in names), f"{matcher} matches no PromptPulse alert"
    assert set(config["route"]["group_by"]) <= sent
