"""The event classes, re-exported from the generated code under short names.

``from shared.events.messages import Evaluation`` instead of reaching into
``shared.events.gen.promptpulse.v1.events_pb2``; the schema itself is
proto/promptpulse/v1/events.proto.
"""

from __future__ import annotations

from shared.events.gen.promptpulse.v1 import events_pb2 as _pb

EventMeta = _pb.EventMeta
InferenceRequest = _pb.InferenceRequest
TokenChunk = _pb.TokenChunk
InferenceResponse = _pb.InferenceResponse
InferenceStatus = _pb.InferenceStatus
LlmUsage = _pb.LlmUsage
Evaluation = _pb.Evaluation
EvaluationErrorType = _pb.EvaluationErrorType
JudgeCall = _pb.JudgeCall
Feedback = _pb.Feedback
Alert = _pb.Alert
AlertState = _pb.AlertState
AlertStatistic = _pb.AlertStatistic

# Events about one request: each has ``meta`` (EventMeta) as field 1.
RequestEvent = InferenceRequest | TokenChunk | InferenceResponse | Evaluation | Feedback
Event = RequestEvent | Alert
REQUEST_EVENT_CLASSES: tuple[type[RequestEvent], ...] = (
    InferenceRequest,
    TokenChunk,
    InferenceResponse,
    Evaluation,
    Feedback,
)
