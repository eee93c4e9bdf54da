"""What the CLI makes of its arguments, files and environment: inputs, ranges, ids, eval
thresholds and checks, monitor changes, keys and URLs. Pure units."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from services.cli import config, evalrun, invoke, metrics, monitors, request, trace
from services.cli.config import CliError

pytestmark = pytest.mark.timeout(30)


# -- invoke -----------------------------------------------------------------------------------


def test_inputs_are_strings_unless_marked_json() -> None:
    assert invoke.parse_inputs(["question=a=b", "n:=3", "history:=[]", "empty="]) == {
        "question": "a=b", "n": 3, "history": [], "empty": ""}


@pytest.mark.parametrize("bad", [["question"], ["=x"], ["n:=not json"], ["q=1", "q=2"]])
def test_bad_inputs_are_usage_errors(bad: list[str]) -> None:
    with pytest.raises(CliError) as error:
        invoke.parse_inputs(bad)
    assert error.value.code == config.EXIT_USAGE


def test_answer_text_and_tokens() -> None:
    assert invoke.answer_text({"answer": "Yes.", "request_id": "r", "variant": "v"}) == "Yes."
    assert invoke.answer_text({"a": "x", "b": [1], "request_id": "r"}) == 'a: x\nb: [1]'
    usage = [{"prompt_tokens": 61, "completion_tokens": 40, "total_tokens": 101},
             {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}]
    assert invoke.token_summary(usage) == "62 prompt + 42 completion = 104"
    assert "n/a" in invoke.token_summary(None)


def test_usage_header_of_a_json_reply() -> None:
    usage = invoke.usage_from_header("prompt=61, completion=40, total=101, calls=1")
    assert invoke.token_summary(usage) == "61 prompt + 40 completion = 101"
    assert invoke.usage_from_header(None) is None
    assert invoke.usage_from_header("prompt=x, completion=1, total=1") is None
    assert invoke.usage_from_header("prompt=1, total=1") is None
    assert invoke.trace_id("00-" + "a" * 32 + "-" + "b" * 16 + "-01") == "a" * 32
    assert invoke.trace_id(None) is None and invoke.trace_id("garbage") is None


# -- metrics ----------------------------------------------------------------------------------


def _metrics_args(**values: object) -> argparse.Namespace:
    base = {"last": None, "start": None, "end": None, "variant": None, "pass_score": None}
    return argparse.Namespace(**{**base, **values})


def test_metrics_range_options() -> None:
    assert metrics.query_params(_metrics_args(last="15m"), now=10_000) == {"from": "9100", "step": "900"}
    assert metrics.query_params(_metrics_args()) == {"step": "3600"}
    params = metrics.query_params(_metrics_args(start="2030-01-01T00:00:00Z", variant="v", pass_score=4))
    assert params == {"from": "2030-01-01T00:00:00Z", "variant": "v", "pass_score": "4"}
    for bad in (_metrics_args(last="90s"), _metrics_args(last="1h", start="0"), _metrics_args(last="soon")):
        with pytest.raises(CliError) as error:
            metrics.query_params(bad)
        assert error.value.code == config.EXIT_USAGE


# -- trace ------------------------------------------------------------------------------------


def test_trace_accepts_a_trace_id_a_traceparent_or_a_request_id() -> None:
    assert trace.classify("A" * 32) == ("trace", "a" * 32)
    assert trace.classify("00-" + "b" * 32 + "-" + "c" * 16 + "-01") == ("trace", "b" * 32)
    request_id = "01a22ca1-5943-794a-bf81-6a763688f17c"
    assert trace.classify(request_id) == ("request", request_id)
    with pytest.raises(CliError):
        trace.classify("not-an-id")


def test_one_request_reads_in_order_and_hides_nothing_it_has() -> None:
    doc = {
        "request_id": "r1", "deployment": "demo", "variant": "variant_1", "run_id": None,
        "start_time": "2030-01-01T12:00:00+00:00", "sampled": True, "trace_id": "a" * 32,
        "inputs": {"question": "Why?"}, "outputs": {"answer": "Because."},
        "response": {"status": "error", "error_type": "timeout", "error_message": "llm took 30 s",
                     "latency_ms": 30001.0, "time_to_first_token_ms": None,
                     "tokens": {"prompt": 10, "completion": 0, "total": 10},
                     "usage": [{"model": "gpt-4o-mini", "total_tokens": 10}]},
        "evaluations": [{"metric": "coherence", "outcome": "scored", "score": 2, "reason": "rambles"},
                        {"metric": "groundedness", "outcome": "error", "score": None, "error_type": "judge_timeout"}],
        "feedback": [{"rating": 1, "comment": "wrong"}],
    }
    lines = dict(request.describe(doc))
    assert lines["deployment"] == "demo  variant variant_1"
    assert lines["status"] == "error (timeout: llm took 30 s)"
    assert lines["tokens"] == "10 prompt + 0 completion = 10  (gpt-4o-mini 10)"
    assert lines["input question"] == "Why?" and lines["output answer"] == "Because."
    assert lines["coherence"] == "2  rambles" and lines["groundedness"] == "error (judge_timeout)"
    assert lines["feedback"] == "rating 1  wrong" and lines["trace"].startswith("a" * 32)
    hidden = dict(request.describe({**doc, "sampled": False, "inputs": None, "outputs": None, "response": None}))
    assert hidden["payload"] == "not kept: the request was not sampled"
    assert hidden["status"] == "no answer stored yet" and "tokens" not in hidden


# -- eval run ---------------------------------------------------------------------------------


def test_thresholds() -> None:
    assert evalrun.parse_threshold("relevance=3.5") == evalrun.Threshold("relevance", "average", 3.5)
    assert evalrun.parse_threshold("fluency.pass_rate=0.8") == evalrun.Threshold("fluency", "pass_rate", 0.8)
    for bad in ("relevance", "relevance=high", "relevance=6", "fluency.pass_rate=80", "x.median=3", "=3"):
        with pytest.raises(CliError) as error:
            evalrun.parse_threshold(bad)
        assert error.value.code == config.EXIT_USAGE, bad


def test_every_threshold_is_checked_on_every_variant() -> None:
    by_variant = {
        "variant_0": {"quality": {"relevance": {"average": 4.2, "pass_rate": 1.0}}},
        "variant_1": {"quality": {"relevance": {"average": 3.4, "pass_rate": 0.5}}},
    }
    thresholds = [evalrun.parse_threshold("relevance=3.5"), evalrun.parse_threshold("relevance.pass_rate=0.5")]
    checks = evalrun.check(by_variant, ["variant_0", "variant_1", "variant_2"], thresholds)
    verdicts = {(c.variant, c.threshold.statistic): c.passed for c in checks}
    assert verdicts == {
        ("variant_0", "average"): True, ("variant_0", "pass_rate"): True,
        ("variant_1", "average"): False, ("variant_1", "pass_rate"): True,  # equal to the minimum passes
        ("variant_2", "average"): False, ("variant_2", "pass_rate"): False,  # no scores never passes
    }
    assert checks[2].line().startswith("FAIL  variant_1: relevance average >= 3.5 (got 3.4)")
    assert "no scores" in checks[4].line()


def test_dataset_rows(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "a"}\n\n{"question": "b", "context": "c"}\n')
    assert evalrun.load_rows(data) == [{"question": "a"}, {"question": "b", "context": "c"}]
    for text, where in (('{"question": "a"}\n[1, 2]\n', ":2:"), ("{oops\n", ":1:"), ("\n\n", "no rows")):
        data.write_text(text)
        with pytest.raises(CliError) as error:
            evalrun.load_rows(data)
        assert where in str(error.value) and error.value.code == config.EXIT_USAGE
    with pytest.raises(CliError):
        evalrun.load_rows(tmp_path / "missing.jsonl")


def test_variants_and_run_ids() -> None:
    assert evalrun.parse_variants(" a, b ,") == ["a", "b"]
    for bad in ("", ",", "a,a"):
        with pytest.raises(CliError):
            evalrun.parse_variants(bad)
    run_id = evalrun.new_run_id("my deployment/x")
    assert evalrun.RUN_ID.match(run_id) and run_id.startswith("eval-my-deployment-x-")
    assert evalrun.new_run_id("demo") != evalrun.new_run_id("demo")


def test_run_progress_before_and_after_the_aggregator_saw_the_run() -> None:
    assert evalrun.progress_of(None, "demo")["evaluations"] == 0
    run = {"deployments": [{"deployment": "other", "progress": {"evaluations": 9}},
                           {"deployment": "demo", "progress": {"requests": 6, "responses": 6, "judged": 6,
                                                               "evaluations": 24}}]}
    assert evalrun.progress_of(run, "demo") == {"requests": 6, "responses": 6, "judged": 6, "evaluations": 24}


# -- monitors ---------------------------------------------------------------------------------

STORED = [
    {"id": "rel", "variant": "variant_1", "statistic": "pass_rate", "metric": "relevance", "score_threshold": 4,
     "threshold": 0.8, "window": "5m", "cadence": "5m", "min_samples": 10, "fire_only_when_ci_below": True,
     "notification": {"webhook_url": "********"},
     "source": "file", "state": "firing", "state_changed_at": "t", "evaluated_through": "t", "last_window": {}},
    {"id": "lat", "statistic": "latency_p95", "threshold": 5.0, "window": "5m", "cadence": "1m", "min_samples": 20,
     "notification": {}, "source": "file", "state": "ok"},
]


def test_a_change_edits_one_monitor_and_sends_back_definitions_only() -> None:
    result = monitors.apply_change(STORED, "rel", {"threshold": 0.7})
    assert [m["id"] for m in result] == ["rel", "lat"]
    assert result[0]["threshold"] == 0.7
    assert result[0]["notification"] == {"webhook_url": "********"}  # masked: the API keeps the stored URL
    assert all(not set(monitors.VIEW_FIELDS) & set(m) for m in result)
    assert STORED[0]["threshold"] == 0.8  # the input is left alone


def test_a_change_of_statistic_drops_the_fields_it_does_not_take() -> None:
    result = monitors.apply_change(STORED, "rel", {"statistic": "error_rate", "threshold": 0.1})
    assert "metric" not in result[0] and "score_threshold" not in result[0]
    assert "fire_only_when_ci_below" not in result[0]
    window = monitors.apply_change(STORED, "rel", {"window": "10m"})[0]
    assert "cadence" not in window  # was tumbling: stays tumbling
    sliding = monitors.apply_change(STORED, "lat", {"window": "10m"})[1]
    assert sliding["cadence"] == "1m"
    assert "variant" not in monitors.apply_change(STORED, "rel", {"variant": ""})[0]


def test_a_new_monitor_needs_its_required_fields() -> None:
    with pytest.raises(CliError) as error:
        monitors.apply_change(STORED, "new", {"threshold": 3.0, "statistic": "average"})
    assert "--window" in str(error.value) and "--metric" in str(error.value)
    result = monitors.apply_change(STORED, "new", {"threshold": 0.001, "statistic": "latency_p95", "window": "1m",
                                                   "min_samples": 1})
    assert result[-1] == {"id": "new", "threshold": 0.001, "statistic": "latency_p95", "window": "1m", "min_samples": 1}
    with pytest.raises(CliError):
        monitors.apply_change(STORED, "rel", {})


def test_remove() -> None:
    assert [m["id"] for m in monitors.remove(STORED, "lat")] == ["rel"]
    with pytest.raises(CliError) as error:
        monitors.remove(STORED, "nope")
    assert error.value.code == config.EXIT_NOT_FOUND


def test_monitor_rows() -> None:
    doc = {"monitors": [{**STORED[0], "last_window": {"value": 0.61, "sample_count": 12, "violated": True}},
                        {**STORED[1], "last_window": None}]}
    first, second = monitors.rows(doc)
    assert first[:4] == ["rel", "variant_1", "relevance pass_rate (>= 4)", "< 0.8"]
    assert first[6:8] == ["FIRING", "0.61 (n=12, violated)"]
    assert second[1:5] == ["all", "latency_p95", "> 5", "5m every 1m"]


# -- URLs and keys ----------------------------------------------------------------------------


def test_urls_come_from_flags_then_environment_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.GATEWAY_URL_ENV, raising=False)
    monkeypatch.setenv(config.API_URL_ENV, "http://api.example:9/")
    args = argparse.Namespace(gateway_url=None, api_url=None)
    assert config.gateway_url(args) == config.DEFAULT_GATEWAY_URL
    assert config.api_url(args) == "http://api.example:9"
    assert config.api_url(argparse.Namespace(api_url="https://x")) == "https://x"
    with pytest.raises(CliError):
        config.gateway_url(argparse.Namespace(gateway_url="localhost:8080"))


def test_gateway_key_order(tmp_path: Path) -> None:
    (tmp_path / "demo.key").write_text("from-file-key\n")
    none = argparse.Namespace(key=None)
    assert config.gateway_key(argparse.Namespace(key="flag-key"), "demo", environ={}, keys_dir=tmp_path).source == "--key"
    env = {config.GATEWAY_KEY_ENV: "generic", config.DEMO_KEY_ENV: "demo-env"}
    assert config.gateway_key(none, "demo", environ=env, keys_dir=tmp_path).value == "generic"
    assert config.gateway_key(none, "demo", environ={config.DEMO_KEY_ENV: "demo-env"}, keys_dir=tmp_path).value == "demo-env"
    key = config.gateway_key(none, "demo", environ={}, keys_dir=tmp_path)
    assert key.value == "from-file-key" and key.source == str(tmp_path / "demo.key")
    with pytest.raises(CliError) as error:  # the demo's key file is no key for another deployment
        config.gateway_key(none, "other", environ={config.DEMO_KEY_ENV: "demo-env"}, keys_dir=tmp_path)
    assert error.value.code == config.EXIT_USAGE and config.GATEWAY_KEY_ENV in str(error.value)


def test_api_keys_from_environment_or_files(tmp_path: Path) -> None:
    (tmp_path / "api-read.key").write_text("read-file\n")
    assert config.api_key(environ={}, keys_dir=tmp_path).value == "read-file"
    assert config.api_key(environ={config.READ_KEY_ENV: "read-env"}, keys_dir=tmp_path).value == "read-env"
    with pytest.raises(CliError) as error:
        config.api_key(admin=True, environ={}, keys_dir=tmp_path)
    assert config.ADMIN_KEY_ENV in str(error.value)


def test_a_key_never_shows_in_its_repr() -> None:
    key = config.Key("ppapi_secret_value", "PROMPTPULSE_API_KEY")
    assert "ppapi_secret_value" not in repr(key) and "ppapi_secret_value" not in str([key])
    assert json.dumps({"source": key.source}) == '{"source": "PROMPTPULSE_API_KEY"}'


# -- compare ----------------------------------------------------------------------------------


def test_compare_rows_and_parameters() -> None:
    from services.cli import build_parser, compare

    args = build_parser().parse_args(["compare", "demo", "variant_0", "variant_1", "--last", "2h"])
    params = compare.query_params(args)
    assert params["baseline"] == "variant_0" and params["candidate"] == "variant_1"
    assert "step" not in params and "variant" not in params and int(params["from"]) > 0
    same = build_parser().parse_args(["compare", "demo", "variant_0", "variant_0"])
    with pytest.raises(CliError):
        compare.query_params(same)
    doc = {
        "deployment": "demo", "baseline": "variant_0", "candidate": "variant_1",
        "quality": {"relevance": {
            "baseline": {"average": 4.8, "pass_rate": 1.0, "samples": 40},
            "candidate": {"average": 3.1, "pass_rate": 0.55, "samples": 38},
            "average_difference": {"value": -1.7, "interval": [-2.05, -1.35]},
            "pass_rate_difference": {"value": -0.45, "interval": [-0.6, -0.29]},
            "verdict": "worse"}},
        "figures": {"variant_0": {"requests": 400, "error_rate": 0.0, "latency_ms": {"p50": 41.0, "p95": 60.0},
                                  "tokens": {"total": 48000}},
                    "variant_1": {"requests": 380, "error_rate": 0.01, "latency_ms": {"p50": 45.0, "p95": 66.0},
                                  "tokens": {"total": 0}}},
    }
    [row] = compare.quality_rows(doc)
    assert row == ["relevance", "4.80 (n=40)", "3.10 (n=38)", "-1.70 [-2.05, -1.35]", "100% → 55%",
                   "-45.0 pt [-60.0, -29.0]", "worse"]
    operations = {r[0]: r[1:] for r in compare.operations_rows(doc)}
    assert operations["requests"] == ["400", "380"] and operations["error rate"] == ["0.0%", "1.0%"]
    assert operations["latency p95"] == ["60 ms", "66 ms"] and operations["tokens / request"] == ["120", "—"]
