"""Records written by earlier schema versions still decode to the same values.

Each file in tests/fixtures/events_v<N>/ is one Kafka record (headers and value bytes) as the
code of schema version N wrote it, plus the event it must decode to (as protobuf JSON). The
bytes and headers were produced once and committed; they are never regenerated, so a change to
proto/ that old records on the topics cannot survive (a renumbered, retyped or reused field, a
renamed header) fails here.

Rules for these files:
- Never edit a fixture's ``headers`` or value (``value_hex``, or ``value_utf8`` for alerts). ``expected`` may change only when a field
  of a binary (non-alert) event is renamed, which is wire-compatible; alert field and enum
  names are the alerts topic's JSON contract and never change.
- A compatible change within a version (a new field, enum value or oneof member) may add a
  fixture beside the old ones: write it with ``python tests/unit/test_schema_compat.py
  tests/fixtures/events_v1`` after adding the sample to ``v1_samples`` under a new name.
- For schema version 2 (an incompatible change, see proto/promptpulse/v1/events.proto):
  create tests/fixtures/events_v2/, add a ``v2_samples`` next to ``v1_samples`` and write its
  fixtures into that folder the same way. Keep events_v1 for as long as the codec must read
  version 1; dropping that support is the only reason to delete it.
The writer only ever adds missing files; it never overwrites one.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from shared.events.builders import dict_to_struct, timestamp
from shared.events.codec import EVENT_TYPES, decode, encode
from shared.events.headers import event_type
from shared.events.messages import (
    Alert,
    AlertState,
    AlertStatistic,
    Evaluation,
    EvaluationErrorType,
    EventMeta,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
    JudgeCall,
    LlmUsage,
    TokenChunk,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("events_v*/*.json"))


def load(path: Path) -> tuple[list[tuple[str, bytes]], bytes, dict]:
    """A fixture's record headers and value, and the event it must decode to."""
    fixture = json.loads(path.read_text(encoding="utf-8"))
    headers = [(name, value.encode()) for name, value in fixture["headers"].items()]
    if "value_utf8" in fixture:  # the alerts topic's JSON, kept readable
        value = fixture["value_utf8"].encode()
    else:
        value = bytes.fromhex(fixture["value_hex"])
    return headers, value, fixture["expected"]


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_old_records_decode_to_the_values_they_were_written_with(path):
    headers, value, expected = load(path)

    event = decode(value, headers)

    # MessageToDict leaves out fields the decoder did not recognise, so a field whose number or
    # type changed shows up as missing here.
    assert json_format.MessageToDict(event) == expected


def test_every_event_type_has_a_v1_fixture():
    written = {event_type(load(p)[0]) for p in FIXTURES.glob("events_v1/*.json")}
    assert written == set(EVENT_TYPES)


def _meta(request_id: str) -> EventMeta:
    start = datetime(2025, 1, 15, 9, 30, 0, 250000, tzinfo=UTC)
    return EventMeta(
        event_id="0194697f-3c2a-7000-8000-00000000000" + request_id[-1],
        event_time=timestamp(start + timedelta(milliseconds=5)),
        request_id=request_id,
        request_start_time=timestamp(start),
        deployment="support-bot",
        variant="concise",
        run_id="nightly-2025-01-15",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="congo=t61rcWkgMzE",
    )


def v1_samples() -> dict[str, Message]:
    """The events behind events_v1/, every field set. Only used to write missing files."""
    judge = JudgeCall(
        model="gpt-4o-mini",
        prompt_version="groundedness-v1",
        prompt_tokens=640,
        completion_tokens=38,
        latency_ms=812.5,
    )
    return {
        "inference.request": InferenceRequest(
            meta=_meta("req-1"),
            inputs=dict_to_struct({"question": "Where is my parcel?", "top_k": 3, "lang": None}),
            client_request_id="client-7",
            streaming=True,
        ),
        "token.chunk": TokenChunk(
            meta=_meta("req-2"),
            output="answer",
            sequence=2,
            token_offset=16,
            token_count=5,
            text=" arrives tomorrow",
        ),
        "inference.response": InferenceResponse(
            meta=_meta("req-3"),
            status=InferenceStatus.INFERENCE_STATUS_OK,
            error_type="none",
            error_message="(set only to freeze the field)",
            latency_ms=1520.25,
            time_to_first_token_ms=180.5,
            usage=[
                LlmUsage(
                    node="answer",
                    model="gpt-4o",
                    prompt_tokens=420,
                    completion_tokens=64,
                    total_tokens=484,
                )
            ],
            outputs=dict_to_struct({"answer": "It arrives tomorrow.", "sources": ["faq#3"]}),
        ),
        "evaluation.scored": Evaluation(
            meta=_meta("req-4"),
            metric="groundedness",
            judge=judge,
            scored=Evaluation.Scored(score=4, reason="Claims match the context."),
        ),
        "evaluation.not_applicable": Evaluation(
            meta=_meta("req-5"),
            metric="groundedness",
            judge=judge,
            not_applicable=Evaluation.NotApplicable(reason="no context"),
        ),
        "evaluation.error": Evaluation(
            meta=_meta("req-6"),
            metric="relevance",
            judge=judge,
            error=Evaluation.Error(
                type=EvaluationErrorType.EVALUATION_ERROR_TYPE_RATE_LIMITED,
                message="429 after 3 attempts",
            ),
        ),
        "feedback": Feedback(meta=_meta("req-7"), rating=1, comment="helpful"),
        "alert": Alert(
            event_id="0194697f-3c2a-7000-8000-0000000000a1",
            event_time=timestamp(datetime(2025, 1, 15, 10, 0, 1, tzinfo=UTC)),
            monitor_id="support-bot/groundedness/concise",
            deployment="support-bot",
            variant="concise",
            metric="groundedness",
            statistic=AlertStatistic.ALERT_STATISTIC_AVERAGE,
            state=AlertState.ALERT_STATE_FIRING,
            window_start=timestamp(datetime(2025, 1, 15, 9, 45, tzinfo=UTC)),
            window_end=timestamp(datetime(2025, 1, 15, 10, 0, tzinfo=UTC)),
            value=2.75,
            threshold=3.5,
            sample_count=48,
            confidence_low=2.41,
            confidence_high=3.09,
            message="average groundedness 2.75 < 3.5 over 15 min (48 samples)",
            pass_score=3,
        ),
    }


def write_missing_fixtures(folder: Path, samples: dict[str, Message]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, event in samples.items():
        path = folder / f"{name}.json"
        if path.exists():
            continue  # frozen: see the module docstring
        record = encode(event)
        fixture: dict = {"headers": {key: value.decode() for key, value in record.headers}}
        if isinstance(event, Alert):
            fixture["value_utf8"] = record.value.decode()
        else:
            fixture["value_hex"] = record.value.hex()
        fixture["expected"] = json_format.MessageToDict(event)
        path.write_text(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n", "utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES / "events_v1"
    for path in write_missing_fixtures(target, v1_samples()):
        print(f"wrote {path}")
