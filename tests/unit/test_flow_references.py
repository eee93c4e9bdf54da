"""``${...}`` references: parsing and resolving, the way prompt flow reads them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.flow.references import (
    PropertyError,
    Reference,
    ReferenceSyntaxError,
    follow_path,
    parse_value,
)


@pytest.mark.parametrize(
    ("text", "node", "name", "path"),
    [
        ("${inputs.question}", None, "question", ()),
        ("${flow.question}", None, "question", ()),
        ("${fetch.output}", "fetch", "fetch", ()),
        ("${convert.output.category}", "convert", "convert", ("category",)),
        ("${n.output.a.b}", "n", "n", ("a", "b")),
        ("${n.output[0]}", "n", "n", (0,)),
        ("${n.output.items[2].name}", "n", "n", ("items", 2, "name")),
        ("${n.output['odd-key']}", "n", "n", ("odd-key",)),
        (" ${inputs.q} ", None, "q", ()),
    ],
)
def test_references_parse(text: str, node: str | None, name: str, path: tuple) -> None:
    ref = parse_value(text)
    assert isinstance(ref, Reference)
    assert (ref.node, ref.name, ref.path) == (node, name, path)


@pytest.mark.parametrize("value", ["plain", "Hello ${inputs.name}", 3, None, ["${inputs.x}"], {"k": "${inputs.x}"}])
def test_non_references_stay_literal(value: object) -> None:
    assert parse_value(value) == value


@pytest.mark.parametrize("text", ["${node}", "${node.inputs.x}", "${inputs.}", "${n.output.a-b}"])
def test_bad_references_raise(text: str) -> None:
    with pytest.raises(ReferenceSyntaxError):
        parse_value(text)


def test_follow_path_through_mappings_lists_and_attributes() -> None:
    value = {"items": [{"name": "a"}, SimpleNamespace(name="b")]}
    assert follow_path(value, ("items", 0, "name"), "r") == "a"
    assert follow_path(value, ("items", 1, "name"), "r") == "b"
    assert follow_path({"0": "zero"}, ("0",), "r") == "zero"


@pytest.mark.parametrize(("value", "path"), [({"a": 1}, ("b",)), ([1], (3,)), ("text", ("missing",)), (None, ("a",))])
def test_follow_path_errors_name_the_reference(value: object, path: tuple) -> None:
    with pytest.raises(PropertyError, match=r"\$\{n.output\}"):
        follow_path(value, path, "${n.output}")
