"""`promptpulse keys` and the demo key: keys printed once, hashes stored in the api_keys_file only,
and the demo deployment's key made once and shared by the gateway and the CLI."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from services.gateway import keys_cli
from shared import demo_key
from shared.apikeys import match_api_key
from shared.deployments import load_api_keys_file, load_deployment

REPO = Path(__file__).resolve().parents[2]
FLOW = REPO / "deploy" / "local" / "flows" / "demo"


def make_folder(tmp_path: Path, *, keys_file: bool = True, name: str = "demo") -> Path:
    folder = tmp_path / "deployments"
    folder.mkdir()
    body = {"name": name, "flow": str(FLOW), "variants": [{"id": "variant_0"}]}
    if keys_file:
        body["api_keys_file"] = "../keys/demo.yaml"
    (folder / "first.yaml").write_text(yaml.safe_dump(body))
    return folder


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_folder(tmp_path)
    monkeypatch.setenv("PROMPTPULSE_DEPLOYMENTS_DIR", str(folder))
    return folder


def test_create_prints_the_key_once_and_stores_only_its_hash(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys_cli.main(["create", "demo", "--id", "ops", "--rate-limit", "30"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("pp_") and "\n" not in key
    keys_file = folder.parent / "keys" / "demo.yaml"
    assert key not in keys_file.read_text()
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    [stored] = load_api_keys_file(keys_file)
    assert (stored.id, stored.rate_limit_per_minute) == ("ops", 30)
    assert match_api_key(key, load_deployment(folder / "first.yaml", check_flow=False).api_keys) == stored
    assert "first.yaml" in str(load_deployment(folder / "first.yaml", check_flow=False).source)

    assert keys_cli.main(["list", "demo"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("ops\t") and key not in listed and "sha256" not in listed


def test_revoke_removes_the_key_and_refuses_unknown_ids(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_cli.main(["create", "demo", "--id", "a"])
    keys_cli.main(["create", "demo", "--id", "b"])
    assert keys_cli.main(["revoke", "demo", "a"]) == 0
    assert [r.id for r in load_api_keys_file(folder.parent / "keys" / "demo.yaml")] == ["b"]
    capsys.readouterr()
    assert keys_cli.main(["revoke", "demo", "a"]) == 2
    assert "has no key 'a'" in capsys.readouterr().err
    assert keys_cli.main(["create", "demo", "--id", "b"]) == 2
    assert "already has a key 'b'" in capsys.readouterr().err


def test_errors_name_what_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path, keys_file=False)
    monkeypatch.setenv("PROMPTPULSE_DEPLOYMENTS_DIR", str(folder))
    assert keys_cli.main(["create", "demo"]) == 2
    assert "has no api_keys_file" in capsys.readouterr().err
    assert keys_cli.main(["create", "nope"]) == 2
    assert "no deployment named 'nope'" in capsys.readouterr().err
    assert keys_cli.main(["create", "demo", "--id", "bad id"]) == 2
    assert keys_cli.main(["create", "demo", "--rate-limit", "0"]) == 2


def test_demo_key_is_generated_once_and_accepted(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    first = demo_key.ensure_demo_key(folder, environ={})
    assert first is not None and first.created and first.key.startswith("pp_")
    assert first.key_file == folder.parent / "keys" / "demo.key"
    assert stat.S_IMODE(first.key_file.stat().st_mode) == 0o600
    second = demo_key.ensure_demo_key(folder, environ={})
    assert second is not None and second.key == first.key and not second.created
    deployment = load_deployment(folder / "first.yaml", check_flow=False)
    assert match_api_key(first.key, deployment.api_keys) is not None
    # The hash file lost (or never written, e.g. copied keys folder): rewritten from the key file.
    (folder.parent / "keys" / "demo.yaml").unlink()
    third = demo_key.ensure_demo_key(folder, environ={})
    assert third is not None and third.key == first.key
    assert match_api_key(first.key, load_api_keys_file(folder.parent / "keys" / "demo.yaml")) is not None


def test_demo_key_from_the_environment_replaces_the_generated_one(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    generated = demo_key.ensure_demo_key(folder, environ={})
    chosen = demo_key.ensure_demo_key(folder, environ={demo_key.ENV_VAR: "my-own-demo-key"})
    assert chosen is not None and chosen.key == "my-own-demo-key" and chosen.key_file is None
    records = load_api_keys_file(folder.parent / "keys" / "demo.yaml")
    assert [r.id for r in records] == ["demo"]
    assert match_api_key("my-own-demo-key", records) is not None
    assert generated is not None and match_api_key(generated.key, records) is None


def test_a_deployment_file_that_is_not_utf8_does_not_stop_the_demo_key(tmp_path: Path) -> None:
    """The gateway provisions the demo key before loading: another broken file is the loader's
    to report (that deployment alone is unavailable), not a crash of the gateway's start-up."""
    folder = make_folder(tmp_path)
    (folder / "another.yaml").write_bytes(b"name: caf\xe9\n")  # Latin-1, not UTF-8
    demo = demo_key.ensure_demo_key(folder, environ={})
    assert demo is not None and demo.created


def test_no_demo_deployment_means_no_demo_key(tmp_path: Path) -> None:
    assert demo_key.ensure_demo_key(make_folder(tmp_path, name="shop"), environ={}) is None


def test_the_repository_demo_deployment_points_at_the_git_ignored_keys_folder() -> None:
    keys_file = demo_key.demo_keys_file(REPO / "deploy" / "local" / "deployments")
    assert keys_file == REPO / ".local" / "keys" / "demo.yaml"
    assert ".local/" in (REPO / ".gitignore").read_text().splitlines()
