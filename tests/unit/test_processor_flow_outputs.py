"""An evaluation flow's outputs read as scores: numbers (inside strings and JSON too), labels,
nothing (not applicable), and what cannot be a score (an error naming it)."""

from __future__ import annotations

import pytest

from services.processor.evaluation.kinds.flow.outputs import OutputError, Reading, read_output


@pytest.mark.parametrize(
    ("output", "value"),
    [
        (4, 4.0),
        (4.5, 4.5),
        ("4", 4.0),
        (" 4.0 ", 4.0),
        ("\n7\n", 7.0),
        ("-0.25", -0.25),
        ("+3.", 3.0),
        (".5", 0.5),
        ("1e1", 10.0),
        ('"4"', 4.0),  # a number in JSON quotes
        ("8 ", 8.0),
    ],
)
def test_numbers_and_numbers_in_strings(output: object, value: float) -> None:
    assert read_output(output) == Reading(value=value)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('{"score": 4, "reason": "every claim is in the context"}', Reading(4.0, None, "every claim is in the context")),
        ({"score": "3", "reason": "mostly"}, Reading(3.0, None, "mostly")),
        ({"Score": 2.5, "Explanation": "half"}, Reading(2.5, None, "half")),
        ('  {"rating": "Correct"}  ', Reading(None, "Correct", "")),
        ({"accuracy": 0.75}, Reading(0.75, None, "")),  # one field, a number: that is the score
    ],
)
def test_a_judges_json_reply_as_object_or_text(output: object, expected: Reading) -> None:
    assert read_output(output) == expected


@pytest.mark.parametrize("output", ["Correct", " Incorrect ", "Score: 4", "4 stars", "nan"])
def test_text_that_is_not_one_number_is_a_label(output: str) -> None:
    assert read_output(output) == Reading(label=output.strip())


def test_a_boolean_is_both_a_number_and_a_label() -> None:
    assert read_output(True) == Reading(1.0, "true")
    assert read_output(False) == Reading(0.0, "false")


@pytest.mark.parametrize("output", [None, "", "   \n", [], {}, '{"score": null}', {"score": " "}])
def test_nothing_there_is_not_a_score(output: object) -> None:
    assert read_output(output) is None


@pytest.mark.parametrize(
    ("output", "named"),
    [
        ([4, 5], "a list"),
        ({"a": 1, "b": 2}, "without a score"),
        ({"score": [1]}, "not a number or a label"),
        (float("inf"), "not a finite number"),
        ("1e999", "not a finite number"),
        ("x" * 500, "500 characters"),
        (object(), "object"),
    ],
)
def test_what_cannot_be_a_score_is_an_error_naming_it(output: object, named: str) -> None:
    with pytest.raises(OutputError, match=named):
        read_output(output)


def test_json_inside_json_is_read_once_only() -> None:
    # A JSON string holding more JSON is a label, not recursion without end.
    nested = '"{\\"score\\": 4}"'
    assert read_output(nested) == Reading(label='{"score": 4}')


def test_a_reason_is_one_line_and_bounded() -> None:
    reading = read_output({"score": 4, "reason": "first line\n  second " + "x" * 2000})
    assert reading is not None and reading.reason.startswith("first line second x")
    assert len(reading.reason) == 1_003 and reading.reason.endswith("...")
