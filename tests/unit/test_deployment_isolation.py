"""The deployments folder, read file by file: one broken deployment never takes the others down,
and every problem of every file is reported at once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.deployments import DeploymentConfigError, load_deployment_folder, load_deployments
from tests.unit.test_deployments import BASE, make_folder


def add_deployment(folder: Path, file_name: str, data: dict[str, Any] | str) -> None:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (folder / file_name).write_text(text)


def named(name: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["name"] = name
    data["monitors"] = [dict(m, id=f"{name}-{m['id']}") for m in data["monitors"]]
    data.update(changes)
    return data


def test_each_broken_file_is_reported_with_all_its_problems_and_the_rest_load(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, BASE)
    add_deployment(folder, "bad-yaml.yaml", "name: bad-yaml\nflow: [unclosed\n")
    add_deployment(folder, "typo.yaml", named("typo", evaluaton={"metrics": ["fluency"]},
                                              allow_forced_variant="sometimes"))
    add_deployment(folder, "zeta.yaml", named("zeta"))

    loaded = load_deployment_folder(folder)

    assert sorted(loaded.deployments) == ["shop", "zeta"]
    assert [b.name for b in loaded.broken] == ["bad-yaml", "typo"]
    assert loaded.broken_names == {"bad-yaml", "typo"}
    bad_yaml, typo = loaded.broken
    assert "bad-yaml.yaml: invalid YAML: line 3" in str(bad_yaml)
    # Both problems of the one file, not just the first.
    assert {p.field for p in typo.problems} == {"evaluaton", "allow_forced_variant"}
    # Everything at once, across files.
    messages = "\n".join(str(p) for p in loaded.problems)
    assert "bad-yaml.yaml" in messages and "typo.yaml: evaluaton: unknown field" in messages


def test_an_unknown_key_in_one_file_affects_only_that_file(tmp_path: Path) -> None:
    # A key a newer release added must not stop the others (`type: proxy` was one; it is known now).
    folder = make_folder(tmp_path, BASE)
    add_deployment(folder, "later.yaml", named("later", retention="30d"))
    loaded = load_deployment_folder(folder)
    assert list(loaded.deployments) == ["shop"]
    assert [(b.name, [p.field for p in b.problems]) for b in loaded.broken] == [("later", ["retention"])]


def test_a_broken_connection_costs_only_the_deployments_that_use_it(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, BASE)
    (folder / "connections.yaml").write_text(yaml.safe_dump({"connections": {
        "judge": {"type": "openai_compatible", "base_url": "http://127.0.0.1:8082/v1", "api_key": "none"},
        "broken": {"type": "openai"},
    }}))
    uses_broken = named("other")
    uses_broken["evaluation"] = dict(uses_broken["evaluation"], judge={"connection": "broken", "model": "m"})
    add_deployment(folder, "other.yaml", uses_broken)

    loaded = load_deployment_folder(folder)

    assert list(loaded.deployments) == ["shop"] and list(loaded.connections) == ["judge"]
    assert [str(p) for p in loaded.folder_problems] == [
        f"{folder / 'connections.yaml'}: connections.broken.api_key_env: required for type openai"
    ]
    (other,) = loaded.broken
    assert other.name == "other"
    assert "'broken' is not in connections.yaml (known: judge; connections.yaml has problems, see them)" in str(other)


def test_a_file_whose_name_cannot_be_read_is_known_by_its_file_stem(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, BASE)
    add_deployment(folder, "named-elsewhere.yaml", "name: real-name\nflow: ./missing\n")
    add_deployment(folder, "garbled.yaml", ": : :\n")
    loaded = load_deployment_folder(folder)
    assert sorted(b.name for b in loaded.broken) == ["garbled", "real-name"]


def test_duplicate_names_and_monitor_ids_refuse_the_later_file_only(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, BASE)
    add_deployment(folder, "zy-shop-copy.yaml", named("shop"))
    clash = named("clash")
    clash["monitors"] = copy.deepcopy(BASE["monitors"])  # reuses shop's monitor id
    add_deployment(folder, "zz-clash.yaml", clash)  # read after shop.yaml

    loaded = load_deployment_folder(folder)

    assert list(loaded.deployments) == ["shop"]
    reasons = {b.file.name: str(b) for b in loaded.broken}
    assert "'shop-relevance' is also a monitor of deployment 'shop'" in reasons["zz-clash.yaml"]
    assert "'shop' is also the name in" in reasons["zy-shop-copy.yaml"]
    assert loaded.broken_names == {"clash"}  # 'shop' serves from shop.yaml


def test_load_deployments_stays_all_or_nothing_and_lists_every_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, BASE)
    add_deployment(folder, "one.yaml", named("one", flow="./nowhere"))
    add_deployment(folder, "two.yaml", named("two", colour="red"))
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployments(folder)
    text = str(caught.value)
    assert "one.yaml: flow:" in text and "two.yaml: colour: unknown field" in text


def test_a_missing_folder_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(DeploymentConfigError, match="deployments folder does not exist"):
        load_deployment_folder(tmp_path / "nowhere")
