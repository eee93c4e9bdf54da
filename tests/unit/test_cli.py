"""The `promptpulse` entry point: every service has a subcommand; bad settings exit 2 naming the
variable; the user commands parse; `--help` imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.cli import SERVICES, build_parser, main
from services.cli.config import REPO_DIR

pytestmark = pytest.mark.timeout(60)


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


def test_the_user_commands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["invoke", "demo", "-i", "question=Why?", "--stream", "--variant", "variant_1"])
    assert (args.deployment, args.inputs, args.stream, args.variant) == ("demo", ["question=Why?"], True, "variant_1")
    assert parser.parse_args(["metrics", "demo", "--follow", "--last", "15m"]).follow is True
    args = parser.parse_args(["alerts", "subscribe", "--deployment", "demo", "--exit-on-firing"])
    assert (args.action, args.deployment, args.exit_on_firing, args.from_beginning) == ("subscribe", "demo", True, False)
    assert parser.parse_args(["trace", "0" * 32]).id == "0" * 32
    args = parser.parse_args(["requests", "demo", "--sampled", "--limit", "5", "--variant", "variant_0"])
    assert (args.sampled, args.limit, args.variant) == (True, 5, "variant_0")
    assert parser.parse_args(["requests", "demo", "--all"]).sampled is False
    assert parser.parse_args(["monitors", "demo"]).action is None
    args = parser.parse_args(["monitors", "demo", "set", "m1", "--threshold", "3.5"])
    assert (args.action, args.monitor_id, args.threshold) == ("set", "m1", 3.5)
    assert parser.parse_args(["tail", "demo"]).deployment == "demo"
    args = parser.parse_args(["eval", "run", "demo", "--data", "d.jsonl", "--variants", "a,b",
                              "--threshold", "relevance=3.5", "--threshold", "fluency.pass_rate=0.9",
                              "--concurrency", "2"])
    assert (args.variants, args.threshold, args.concurrency) == ("a,b", ["relevance=3.5", "fluency.pass_rate=0.9"], 2)


def test_unknown_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "run", "demo"])  # --data and --variants are required
    assert exit_info.value.code == 2
    assert "--data" in capsys.readouterr().err


def test_help_imports_no_client_library() -> None:
    # `promptpulse --help` builds every parser: none may import aiohttp, rich, aiokafka or settings.
    code = ("import sys; from services.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('aiohttp', 'rich', 'aiokafka', 'pydantic', 'shared.settings') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
