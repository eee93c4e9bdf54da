"""llmsim's stand-in tokenizer and the answers built from a prompt."""

from __future__ import annotations

import pytest

from services.llmsim import tokens
from services.llmsim.answers import OFF_TOPIC_VOCABULARY, compose_answer, degrade
from services.llmsim.prompt import ChatView, chat_view, message_text


@pytest.mark.parametrize(
    "text", ["", "  ", "Hello, world!", "a  b\n\nc ", '{"score": 4}', "l'été 30€ "]
)
def test_pieces_join_back_to_the_text(text: str) -> None:
    assert "".join(tokens.pieces(text)) == text


def test_tokens_are_words_and_punctuation() -> None:
    assert tokens.count_tokens("Hello, world!") == 4
    assert tokens.count_tokens("   ") == 0
    assert tokens.count_prompt_tokens(["Hello, world!", "hi"]) == (4 + 3) + (1 + 3) + 3


def test_truncate_keeps_whole_tokens() -> None:
    assert tokens.truncate("one two three", 2) == ("one two", True)
    assert tokens.truncate("one two", 2) == ("one two", False)


def test_message_text_reads_text_parts_only() -> None:
    parts = [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {}},
        {"type": "text", "text": "b"},
    ]
    assert message_text(parts) == "a\nb"
    assert message_text(None) == ""


def test_chat_view_finds_question_and_context() -> None:
    view = chat_view(
        [("system", "Be brief."), ("user", "Context: Lyon is in France.\nQuestion: Where is Lyon?")]
    )
    assert view.question == "Where is Lyon?"
    assert "Lyon is in France." in view.context and "Be brief." in view.context
    tagged = chat_view([("user", "<context>Paris.</context> <question>Capital?</question>")])
    assert (tagged.question, tagged.context) == ("Capital?", "Paris.")


def test_answer_reuses_the_question_and_the_relevant_context() -> None:
    view = ChatView(
        question="How long does shipping take?",
        context="Refunds take 30 days. Shipping takes five business days. Our office is in Lyon.",
    )
    answer = compose_answer(view, 60)
    assert "shipping" in answer.lower() and "five business days" in answer
    assert "Lyon" not in answer  # shares no word with the question
    assert compose_answer(view, 60) == answer
    assert tokens.count_tokens(compose_answer(view, 4)) == 4


def test_answer_without_context_still_uses_the_question_terms() -> None:
    answer = compose_answer(ChatView(question="Why do kittens purr?", context=""), 60)
    assert "kittens" in answer and "purr" in answer


def test_degrade_is_deterministic_and_proportional() -> None:
    answer = compose_answer(
        ChatView(
            question="How long does shipping take?",
            context="Shipping takes five business days to Lyon.",
        ),
        60,
    )
    assert degrade(answer, 0.0, "k") == answer
    assert degrade(answer, 0.6, "k") == degrade(answer, 0.6, "k")

    def off_topic_share(text: str) -> float:
        words = tokens.content_words(text)
        return sum(w in OFF_TOPIC_VOCABULARY for w in words) / len(words)

    shares = [off_topic_share(degrade(answer, level, "k")) for level in (0.0, 0.3, 1.0)]
    assert shares[0] == 0 < shares[1] < shares[2] == 1
