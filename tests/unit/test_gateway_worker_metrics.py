"""Merging workers' /metrics texts: every sample labelled with its worker, each family once."""

from prometheus_client.parser import text_string_to_metric_families

from services.gateway.worker_metrics import merged

WORKER_TEXT = """# HELP promptpulse_gateway_http_requests_total HTTP requests answered.
# TYPE promptpulse_gateway_http_requests_total counter
promptpulse_gateway_http_requests_total{endpoint="score",code="200"} {n}
# HELP promptpulse_gateway_requests_in_flight Score and feedback requests being served.
# TYPE promptpulse_gateway_requests_in_flight gauge
promptpulse_gateway_requests_in_flight {m}
"""


def test_each_family_once_with_every_worker_s_samples():
    text = merged(
        [(0, WORKER_TEXT.replace("{n}", "3").replace("{m}", "1")),
         (1, WORKER_TEXT.replace("{n}", "5").replace("{m}", "0"))],
        unreachable=1,
        prefix="promptpulse_gateway_",
    ).decode()
    assert text.count("# TYPE promptpulse_gateway_http_requests_total counter") == 1
    families = {family.name: family for family in text_string_to_metric_families(text)}
    requests = {s.labels["worker"]: s.value for s in families["promptpulse_gateway_http_requests"].samples
                if s.name.endswith("_total")}
    assert requests == {"0": 3.0, "1": 5.0}
    assert [s.value for s in families["promptpulse_gateway_workers_unreachable"].samples] == [1.0]
    in_flight = {s.labels["worker"]: s.value for s in families["promptpulse_gateway_requests_in_flight"].samples}
    assert in_flight == {"0": 1.0, "1": 0.0}
