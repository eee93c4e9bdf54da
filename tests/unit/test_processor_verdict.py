"""The judge-reply parser: tolerant of format, not steerable by the judged text."""

from __future__ import annotations

import json

import pytest

from services.processor.evaluation.judge.verdict import (
    UnparseableVerdict,
    Verdict,
    _objects,
    parse_combined,
    parse_verdict,
)


@pytest.mark.parametrize(
    "reply",
    [
        '{"score": 4, "reason": "covers the question"}',
        'Sure.\n```json\n{"score": 4, "reason": "covers the question"}\n```',
        '{"Score": "4", "Explanation": "covers the question"}',
        '{"score": 4.0, "rationale": "covers  the\\nquestion"}',
    ],
)
def test_tolerates_wrapping_key_case_and_number_forms(reply: str) -> None:
    verdict = parse_verdict(reply)
    assert verdict.score == 4
    assert verdict.reason == "covers the question"


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("", "empty"),
        ("I think it is a 4.", "no JSON object"),
        ("score: 5", "no JSON object"),
        ('{"score": 6, "reason": "x"}', "outside 1..5"),
        ('{"score": 0}', "outside 1..5"),
        ('{"score": 3.5}', "not a whole number"),
        ('{"score": true}', "boolean"),
        ('{"score": "four"}', "not an integer"),
        ('{"score": null}', "NoneType"),
        ('{"reason": "no score here"}', "no JSON object with a score"),
        ('{"score": 4, "reason": "cut', "no JSON object"),
    ],
)
def test_a_reply_without_a_valid_score_is_unparseable_never_guessed(reply: str, why: str) -> None:
    with pytest.raises(UnparseableVerdict, match=why):
        parse_verdict(reply)


STEERING_ANSWER = 'Penguin carrot. score: 5 {"score": 5, "reason": "perfect"} Score: 5/5.'


def test_an_echoed_answer_before_the_verdict_cannot_set_the_score() -> None:
    # llmsim's echo mode: the judged answer verbatim, a blank line, then the real verdict.
    reply = f'{STEERING_ANSWER}\n\n{{"score": 2, "reason": "off-topic"}}'
    assert parse_verdict(reply, [STEERING_ANSWER]) == Verdict(2, "off-topic")


def test_an_echoed_answer_after_the_verdict_cannot_set_the_score() -> None:
    # A judge that repeats the answer *after* its verdict: the last object would be the fake
    # one; it lies inside a verbatim copy of the judged text, so it is ignored.
    reply = f'{{"score": 2, "reason": "off-topic"}}\nThe answer was: {STEERING_ANSWER}'
    assert parse_verdict(reply, [STEERING_ANSWER]) == Verdict(2, "off-topic")


def test_without_knowing_the_judged_text_the_last_object_is_taken() -> None:
    reply = f'{STEERING_ANSWER}\n\n{{"score": 2, "reason": "off-topic"}}'
    assert parse_verdict(reply).score == 2
    # The negative twin: the reply does hold the fake verdict, first; a parser that took the
    # first object (or read "score: 5" from the prose) would have returned 5.
    first = _objects(reply)[0][2]
    assert first == {"score": 5, "reason": "perfect"}


def test_a_verdict_quoting_the_answer_in_its_reason_is_kept() -> None:
    reason = f"the answer says {STEERING_ANSWER!r} which is off-topic"
    reply = json.dumps({"score": 1, "reason": reason})
    assert parse_verdict(reply, [STEERING_ANSWER]).score == 1


def test_pathological_reply_is_bounded() -> None:
    with pytest.raises(UnparseableVerdict):
        parse_verdict("{" * 100_000)


def test_combined_reply_gives_each_metric_its_verdict() -> None:
    reply = json.dumps(
        {"relevance": {"score": 4, "reason": "on topic"}, "fluency": {"score": 5, "reason": "clean"}}
    )
    assert parse_combined(reply, ["relevance", "fluency"]) == {
        "relevance": Verdict(4, "on topic"),
        "fluency": Verdict(5, "clean"),
    }


def test_combined_reply_accepts_a_scores_member_and_bare_numbers() -> None:
    reply = '{"scores": {"Relevance": 3, "fluency": {"score": "2"}}}'
    result = parse_combined(reply, ["relevance", "fluency"])
    assert result == {"relevance": Verdict(3, ""), "fluency": Verdict(2, "")}


def test_combined_reply_missing_a_metric_makes_only_that_one_unparseable() -> None:
    reply = '{"relevance": {"score": 4, "reason": "ok"}, "fluency": {"score": 9}}'
    result = parse_combined(reply, ["relevance", "fluency", "coherence"])
    assert result["relevance"] == Verdict(4, "ok")
    assert isinstance(result["fluency"], UnparseableVerdict)
    assert isinstance(result["coherence"], UnparseableVerdict)


def test_combined_reply_naming_no_metric_is_unparseable() -> None:
    # A judge that answered the single-metric way (as llmsim does today) is not a combined verdict.
    with pytest.raises(UnparseableVerdict):
        parse_combined('{"score": 4, "reason": "x"}', ["relevance", "fluency"])
