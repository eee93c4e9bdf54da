"""Numbers, times and table rows as the CLI shows them. Pure code, no I/O.

A figure the API reports as null (no data in range) is shown as an em dash, never as 0, so an
empty window cannot be mistaken for a perfect one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

NONE = "—"


def integer(value: Any) -> str:
    return NONE if value is None else f"{int(value):,}"


def number(value: Any, digits: int = 2) -> str:
    return NONE if value is None else f"{float(value):.{digits}f}"


def percent(value: Any, digits: int = 1) -> str:
    return NONE if value is None else f"{float(value) * 100:.{digits}f}%"


def millis(value: Any) -> str:
    """Milliseconds as ``850 ms`` or ``1.24 s``."""
    if value is None:
        return NONE
    value = float(value)
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms"


def short_time(text: str | None) -> str:
    """``2030-01-01T12:00:05.123+00:00`` as ``12:00:05``, in local time."""
    moment = parse_time(text)
    return NONE if moment is None else moment.astimezone().strftime("%H:%M:%S")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clip(text: Any, width: int) -> str:
    """One line of at most ``width`` characters."""
    if text is None:
        return NONE
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``2d`` (or bare seconds) as a timedelta; ValueError otherwise."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like 15m, 1h or 2d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


# -- metrics ----------------------------------------------------------------------------------


def metrics_columns(doc: dict[str, Any], variants: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(heading, figures) per column: all traffic, then each variant; or only ``variants``, in
    that order (a variant without data gets an empty column)."""
    by_variant = doc.get("by_variant") or {}
    if variants is not None:
        return [(v, by_variant.get(v) or {}) for v in variants]
    return [("all", doc.get("overview") or {})] + sorted(by_variant.items())


def _quality(figures: dict[str, Any], metric: str) -> dict[str, Any]:
    return (figures.get("quality") or {}).get(metric) or {}


def metrics_rows(
    doc: dict[str, Any], variants: list[str] | None = None, *, violations: bool = True
) -> tuple[list[str], list[list[str]]]:
    """The overview table of a ``/v1/deployments/{d}/metrics`` (or run) answer: headings and
    rows, one column for all traffic and one per variant (or one per given variant)."""
    columns = metrics_columns(doc, variants)
    headings = ["", *(name for name, _ in columns)]
    figures = [f for _, f in columns]

    def row(label: str, cell: Any) -> list[str]:
        return [label, *(cell(f) for f in figures)]

    rows = [
        row("requests", lambda f: integer(f.get("requests"))),
        row("errors", lambda f: f"{integer(f.get('errors'))} ({percent(f.get('error_rate'))})"
            if f.get("errors") is not None else NONE),
        row("tokens (prompt + completion)",
            lambda f: f"{integer((f.get('tokens') or {}).get('prompt'))} + "
                      f"{integer((f.get('tokens') or {}).get('completion'))}" if f.get("tokens") else NONE),
        row("tokens total", lambda f: integer((f.get("tokens") or {}).get("total"))),
    ]
    for q in ("p50", "p95", "p99"):
        rows.append(row(f"latency {q}", lambda f, q=q: millis((f.get("latency_ms") or {}).get(q))))
    rows.append(row("time to first token p50",
                    lambda f: millis((f.get("time_to_first_token_ms") or {}).get("p50"))))
    metrics = sorted({m for f in figures for m in (f.get("quality") or {})})
    pass_score = doc.get("pass_score", 3)
    overview = (doc.get("overview") or {}).get("quality") or {}
    for metric in metrics:
        shown = overview.get(metric) or {}
        # Figures are per evaluator version: name the one shown, and the metric's own scale and
        # pass rule when it is not a built-in 1-5 metric.
        name = f"{metric}@{shown['version']}" if shown.get("version") and len(shown.get("versions") or ()) > 1 \
            else metric
        rows.append(row(f"{name} average{_scale_note(shown)}", lambda f, m=metric: _average(_quality(f, m))))
        rows.append(row(f"{name} pass rate ({_rule_note(shown, pass_score)})",
                        lambda f, m=metric: percent(_quality(f, m).get("pass_rate"))))
        if violations:
            rows.append(row(f"{metric} violations", lambda f, m=metric: _violations(_quality(f, m))))
    return headings, rows


def _scale_note(quality: dict[str, Any]) -> str:
    scale = quality.get("scale") or {}
    if scale.get("type") == "integer" and (scale.get("min"), scale.get("max")) != (1.0, 5.0):
        return f" ({scale['min']:g}-{scale['max']:g})"
    if scale.get("type") == "float":
        return " (0-1)"
    if scale.get("type") == "labels":
        return " (" + ", ".join(f"{k}={v:g}" for k, v in (scale.get("labels") or {}).items()) + ")"
    return ""


def _rule_note(quality: dict[str, Any], pass_score: Any) -> str:
    rule = quality.get("pass_rule") or {}
    if quality.get("pass_score") is None and "labels" in rule:
        return " or ".join(rule["labels"])
    if quality.get("pass_score") is None and rule.get("at_least") is not None:
        return f">= {rule['at_least']:g}"
    return f">= {pass_score}"


def _average(quality: dict[str, Any]) -> str:
    if quality.get("average") is None:
        return NONE
    return f"{quality['average']:.2f} (n={quality.get('samples', 0)})"


def _violations(quality: dict[str, Any]) -> str:
    counts = quality.get("violations")
    if not counts:
        return NONE  # per-variant figures carry no violation counts: monitors are per monitor
    if not counts.get("windows"):
        return "0 windows"
    return f"{counts['violations']}/{counts['windows']} ({percent(counts.get('violation_rate'))})"


# -- alerts -----------------------------------------------------------------------------------

_QUALITY = {"ALERT_STATISTIC_AVERAGE": "average", "ALERT_STATISTIC_PASS_RATE": "pass rate"}


def alert_fields(alert: dict[str, Any]) -> dict[str, Any]:
    """The parts of an alert (its canonical JSON, camelCase) that a line shows."""
    statistic = alert.get("statistic") or ""
    quality = statistic in _QUALITY
    state = str(alert.get("state") or "").removeprefix("ALERT_STATE_").lower() or "unknown"
    metric = alert.get("metric") or ""
    what = f"{metric} {_QUALITY[statistic]}" if quality else metric
    if statistic == "ALERT_STATISTIC_PASS_RATE" and alert.get("passScore"):
        what += f" (score >= {alert['passScore']})"
    return {"state": state, "quality": quality, "what": what}


def alert_line(alert: dict[str, Any]) -> str:
    """One line per alert transition:

    ``12:03:05 FIRING   demo-relevance-variant_1  demo/variant_1  relevance average 3.12 < 3.5
    (window 11:58:00-12:03:00, 14 samples)``
    """
    parts = alert_fields(alert)
    firing = parts["state"] == "firing"
    if parts["quality"]:  # quality is bad when low
        sign = "<" if firing else ">="
    else:
        sign = ">" if firing else "<="
    scope = alert.get("deployment") or "?"
    if alert.get("variant"):
        scope += f"/{alert['variant']}"
    value = alert.get("value")
    value_text = NONE if value is None else f"{float(value):.4g}"
    threshold = alert.get("threshold")
    threshold_text = NONE if threshold is None else f"{float(threshold):g}"
    window = f"{short_time(alert.get('windowStart'))}-{short_time(alert.get('windowEnd'))}"
    samples = alert.get("sampleCount", 0)
    # Silenced: held back from direct destinations (Slack, PagerDuty, ...), so nobody was told.
    silenced = "  [silenced]" if alert.get("silenced") else ""
    return (f"{short_time(alert.get('eventTime'))} {parts['state'].upper():<8} {alert.get('monitorId', '?')}  "
            f"{scope}  {parts['what']} {value_text} {sign} {threshold_text}  "
            f"(window {window}, {samples} samples){silenced}")


def alert_matches(alert: dict[str, Any], deployment: str | None) -> bool:
    return deployment is None or alert.get("deployment") == deployment


def api_alert_as_event(row: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/alerts`` row in the topic's canonical-JSON shape, so both print alike."""
    statistic = {"average": "ALERT_STATISTIC_AVERAGE", "pass_rate": "ALERT_STATISTIC_PASS_RATE"}
    return {
        "eventTime": row.get("created_at"),
        "monitorId": row.get("monitor_id"),
        "deployment": row.get("deployment"),
        "variant": row.get("variant") or "",
        "metric": row.get("metric") or row.get("statistic"),
        "statistic": statistic.get(row.get("statistic") or "", "ALERT_STATISTIC_UNSPECIFIED"),
        "state": f"ALERT_STATE_{str(row.get('state') or '').upper()}",
        "windowStart": row.get("window_start"),
        "windowEnd": row.get("window_end"),
        "value": row.get("value"),
        "threshold": row.get("threshold"),
        "sampleCount": row.get("sample_count"),
        "silenced": bool(row.get("silenced")),
    }
