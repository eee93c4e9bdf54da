import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferenceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INFERENCE_STATUS_UNSPECIFIED: _ClassVar[InferenceStatus]
    INFERENCE_STATUS_OK: _ClassVar[InferenceStatus]
    INFERENCE_STATUS_ERROR: _ClassVar[InferenceStatus]
    INFERENCE_STATUS_CANCELLED: _ClassVar[InferenceStatus]

class EvaluationErrorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATION_ERROR_TYPE_UNSPECIFIED: _ClassVar[EvaluationErrorType]
    EVALUATION_ERROR_TYPE_TIMEOUT: _ClassVar[EvaluationErrorType]
    EVALUATION_ERROR_TYPE_RATE_LIMITED: _ClassVar[EvaluationErrorType]
    EVALUATION_ERROR_TYPE_UNPARSEABLE: _ClassVar[EvaluationErrorType]
    EVALUATION_ERROR_TYPE_ENDPOINT_ERROR: _ClassVar[EvaluationErrorType]
    EVALUATION_ERROR_TYPE_BUDGET_EXHAUSTED: _ClassVar[EvaluationErrorType]
    EVALUATION_ERROR_TYPE_CONFIGURATION: _ClassVar[EvaluationErrorType]
    EVALUATION_ERROR_TYPE_INTERNAL: _ClassVar[EvaluationErrorType]

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_FIRING: _ClassVar[AlertState]
    ALERT_STATE_RESOLVED: _ClassVar[AlertState]

class AlertStatistic(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATISTIC_UNSPECIFIED: _ClassVar[AlertStatistic]
    ALERT_STATISTIC_AVERAGE: _ClassVar[AlertStatistic]
    ALERT_STATISTIC_PASS_RATE: _ClassVar[AlertStatistic]
    ALERT_STATISTIC_ERROR_RATE: _ClassVar[AlertStatistic]
    ALERT_STATISTIC_LATENCY_P95: _ClassVar[AlertStatistic]
    ALERT_STATISTIC_TOKENS_PER_HOUR: _ClassVar[AlertStatistic]
    ALERT_STATISTIC_COST_PER_HOUR: _ClassVar[AlertStatistic]
INFERENCE_STATUS_UNSPECIFIED: InferenceStatus
INFERENCE_STATUS_OK: InferenceStatus
INFERENCE_STATUS_ERROR: InferenceStatus
INFERENCE_STATUS_CANCELLED: InferenceStatus
EVALUATION_ERROR_TYPE_UNSPECIFIED: EvaluationErrorType
EVALUATION_ERROR_TYPE_TIMEOUT: EvaluationErrorType
EVALUATION_ERROR_TYPE_RATE_LIMITED: EvaluationErrorType
EVALUATION_ERROR_TYPE_UNPARSEABLE: EvaluationErrorType
EVALUATION_ERROR_TYPE_ENDPOINT_ERROR: EvaluationErrorType
EVALUATION_ERROR_TYPE_BUDGET_EXHAUSTED: EvaluationErrorType
EVALUATION_ERROR_TYPE_CONFIGURATION: EvaluationErrorType
EVALUATION_ERROR_TYPE_INTERNAL: EvaluationErrorType
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_FIRING: AlertState
ALERT_STATE_RESOLVED: AlertState
ALERT_STATISTIC_UNSPECIFIED: AlertStatistic
ALERT_STATISTIC_AVERAGE: AlertStatistic
ALERT_STATISTIC_PASS_RATE: AlertStatistic
ALERT_STATISTIC_ERROR_RATE: AlertStatistic
ALERT_STATISTIC_LATENCY_P95: AlertStatistic
ALERT_STATISTIC_TOKENS_PER_HOUR: AlertStatistic
ALERT_STATISTIC_COST_PER_HOUR: AlertStatistic

class EventMeta(_message.Message):
    __slots__ = ("event_id", "event_time", "request_id", "request_start_time", "deployment", "variant", "run_id", "traceparent", "tracestate")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_START_TIME_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_time: _timestamp_pb2.Timestamp
    request_id: str
    request_start_time: _timestamp_pb2.Timestamp
    deployment: str
    variant: str
    run_id: str
    traceparent: str
    tracestate: str
    def __init__(self, event_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., request_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deployment: _Optional[str] = ..., variant: _Optional[str] = ..., run_id: _Optional[str] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class InferenceRequest(_message.Message):
    __slots__ = ("meta", "inputs", "client_request_id", "streaming")
    META_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    inputs: _struct_pb2.Struct
    client_request_id: str
    streaming: bool
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., client_request_id: _Optional[str] = ..., streaming: _Optional[bool] = ...) -> None: ...

class TokenChunk(_message.Message):
    __slots__ = ("meta", "output", "sequence", "token_offset", "token_count", "text")
    META_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    output: str
    sequence: int
    token_offset: int
    token_count: int
    text: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., output: _Optional[str] = ..., sequence: _Optional[int] = ..., token_offset: _Optional[int] = ..., token_count: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class LlmUsage(_message.Message):
    __slots__ = ("node", "model", "prompt_tokens", "completion_tokens", "total_tokens")
    NODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    node: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, node: _Optional[str] = ..., model: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class InferenceResponse(_message.Message):
    __slots__ = ("meta", "status", "error_type", "error_message", "latency_ms", "time_to_first_token_ms", "usage", "outputs")
    META_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    status: InferenceStatus
    error_type: str
    error_message: str
    latency_ms: float
    time_to_first_token_ms: float
    usage: _containers.RepeatedCompositeFieldContainer[LlmUsage]
    outputs: _struct_pb2.Struct
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., status: _Optional[_Union[InferenceStatus, str]] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., latency_ms: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., usage: _Optional[_Iterable[_Union[LlmUsage, _Mapping]]] = ..., outputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class JudgeCall(_message.Message):
    __slots__ = ("model", "prompt_version", "prompt_tokens", "completion_tokens", "latency_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt_version: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    def __init__(self, model: _Optional[str] = ..., prompt_version: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("meta", "metric", "judge", "scored", "not_applicable", "error", "evaluator", "evaluator_version", "rejudge_id")
    class Scored(_message.Message):
        __slots__ = ("score", "reason", "value", "label")
        SCORE_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        LABEL_FIELD_NUMBER: _ClassVar[int]
        score: int
        reason: str
        value: float
        label: str
        def __init__(self, score: _Optional[int] = ..., reason: _Optional[str] = ..., value: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...
    class NotApplicable(_message.Message):
        __slots__ = ("reason",)
        REASON_FIELD_NUMBER: _ClassVar[int]
        reason: str
        def __init__(self, reason: _Optional[str] = ...) -> None: ...
    class Error(_message.Message):
        __slots__ = ("type", "message")
        TYPE_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        type: EvaluationErrorType
        message: str
        def __init__(self, type: _Optional[_Union[EvaluationErrorType, str]] = ..., message: _Optional[str] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    NOT_APPLICABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    REJUDGE_ID_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    metric: str
    judge: JudgeCall
    scored: Evaluation.Scored
    not_applicable: Evaluation.NotApplicable
    error: Evaluation.Error
    evaluator: str
    evaluator_version: str
    rejudge_id: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., metric: _Optional[str] = ..., judge: _Optional[_Union[JudgeCall, _Mapping]] = ..., scored: _Optional[_Union[Evaluation.Scored, _Mapping]] = ..., not_applicable: _Optional[_Union[Evaluation.NotApplicable, _Mapping]] = ..., error: _Optional[_Union[Evaluation.Error, _Mapping]] = ..., evaluator: _Optional[str] = ..., evaluator_version: _Optional[str] = ..., rejudge_id: _Optional[str] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("meta", "rating", "comment", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    rating: int
    comment: str
    labels: _containers.ScalarMap[str, float]
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., labels: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("event_id", "event_time", "monitor_id", "deployment", "variant", "metric", "statistic", "state", "window_start", "window_end", "value", "threshold", "sample_count", "confidence_low", "confidence_high", "message", "pass_score", "silenced")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_LOW_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_HIGH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PASS_SCORE_FIELD_NUMBER: _ClassVar[int]
    SILENCED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_time: _timestamp_pb2.Timestamp
    monitor_id: str
    deployment: str
    variant: str
    metric: str
    statistic: AlertStatistic
    state: AlertState
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    value: float
    threshold: float
    sample_count: int
    confidence_low: float
    confidence_high: float
    message: str
    pass_score: int
    silenced: bool
    def __init__(self, event_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., monitor_id: _Optional[str] = ..., deployment: _Optional[str] = ..., variant: _Optional[str] = ..., metric: _Optional[str] = ..., statistic: _Optional[_Union[AlertStatistic, str]] = ..., state: _Optional[_Union[AlertState, str]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., sample_count: _Optional[int] = ..., confidence_low: _Optional[float] = ..., confidence_high: _Optional[float] = ..., message: _Optional[str] = ..., pass_score: _Optional[int] = ..., silenced: _Optional[bool] = ...) -> None: ...

class RejudgeCommand(_message.Message):
    __slots__ = ("rejudge_id", "requested_at", "deployment", "evaluator", "evaluator_version", "window_start", "window_end", "sample")
    REJUDGE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    rejudge_id: str
    requested_at: _timestamp_pb2.Timestamp
    deployment: str
    evaluator: str
    evaluator_version: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    sample: int
    def __init__(self, rejudge_id: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deployment: _Optional[str] = ..., evaluator: _Optional[str] = ..., evaluator_version: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sample: _Optional[int] = ...) -> None: ...

class RejudgeProgress(_message.Message):
    __slots__ = ("rejudge_id", "updated_at", "status", "total", "judged", "published", "message")
    REJUDGE_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    rejudge_id: str
    updated_at: _timestamp_pb2.Timestamp
    status: str
    total: int
    judged: int
    published: int
    message: str
    def __init__(self, rejudge_id: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[str] = ..., total: _Optional[int] = ..., judged: _Optional[int] = ..., published: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
