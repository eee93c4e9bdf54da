"""Which flows ``promptpulse flows install`` reads from a deployments folder."""

from __future__ import annotations

from pathlib import Path

from services.cli.flows_install import deployed_flows


def _flow(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "flow.dag.yaml").write_text("inputs: {}\noutputs: {}\nnodes: []\n", encoding="utf-8")
    return folder.resolve()


def test_two_flows_whose_folders_share_a_name_are_both_installed(tmp_path: Path) -> None:
    first, second = _flow(tmp_path / "flows" / "v1" / "chat"), _flow(tmp_path / "flows" / "v2" / "chat")
    deployments = tmp_path / "deployments"
    deployments.mkdir()
    (deployments / "a.yaml").write_text("name: a\nflow: ../flows/v1/chat\n", encoding="utf-8")
    (deployments / "b.yaml").write_text("name: b\nflow: ../flows/v2/chat\n", encoding="utf-8")
    (deployments / "c.yaml").write_text("name: c\nflow: ../flows/v1/chat\n", encoding="utf-8")

    flows = deployed_flows(deployments)

    assert sorted(flows.values()) == sorted([first, second])  # each flow once, none left out
    assert flows["chat"] == first
