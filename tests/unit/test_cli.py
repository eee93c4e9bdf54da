"""The `promptpulse` entry point: every service has a subcommand; bad settings exit 2 naming the variable."""

from __future__ import annotations

import pytest

from services.cli import SERVICES, build_parser, main


def test_every_service_has_a_subcommand() -> None:
    parser = build_parser()
    for name in (*SERVICES, "migrate", "topics", "up", "down", "status"):
        assert parser.parse_args([name]).command == name


def test_keys_passes_its_arguments_through() -> None:
    args = build_parser().parse_args(["keys", "create", "demo", "--name", "ci"])
    assert args.rest == ["create", "demo", "--name", "ci"]


def test_bad_setting_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMPTPULSE_KAFKA__PARTITIONS", "many")
    assert main(["topics"]) == 2
    assert "PROMPTPULSE_KAFKA__PARTITIONS" in capsys.readouterr().err
