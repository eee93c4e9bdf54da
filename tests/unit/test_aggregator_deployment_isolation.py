"""The aggregator's sampling with a deployment file that does not load: that deployment keeps no
payloads until it loads again, and the others keep their own rates (issue 12, point 2)."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.aggregator.app import read_deployments, sampling_policy
from services.aggregator.settings import AggregatorSettings
from tests.unit.test_deployments import BASE, make_folder


def test_a_deployment_that_does_not_load_keeps_no_payloads_and_the_others_keep_their_rate(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, BASE | {"evaluation": BASE["evaluation"] | {"sampling_rate": 1.0}})
    (folder / "broken.yaml").write_text(yaml.safe_dump(BASE | {"name": "broken", "monitors": [], "colour": "red"}))
    settings = AggregatorSettings(deployments_dir=folder)
    policy = sampling_policy(settings, read_deployments(settings))
    ids = [f"0190c3a0-0000-7000-8000-{n:012d}" for n in range(200)]
    assert all(policy.sampled(i, "shop") for i in ids)  # rate 1.0
    assert not any(policy.sampled(i, "broken") for i in ids)  # rate 0, not the default
    assert sum(policy.sampled(i, "unknown") for i in ids) > 0  # the default rate for names no file has
