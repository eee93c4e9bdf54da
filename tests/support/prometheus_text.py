"""Reading a service's ``/metrics`` text in tests: prometheus_client's own parser, so a test
checks values and label sets, not how a number happens to be printed (``3`` or ``3.0``)."""

from __future__ import annotations

import shutil
import subprocess

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample: (sample name, its labels) -> value. Raises on text that does not parse."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: object) -> float | None:
    """The value of the sample ``name`` with exactly these labels (None if absent)."""
    return samples(text).get((name, frozenset((k, str(v)) for k, v in labels.items())))


def total(text: str, name: str, **labels: object) -> float:
    """The sum over the samples ``name`` that carry every label given (0 if none)."""
    wanted = {(k, str(v)) for k, v in labels.items()}
    return sum(v for (sample, found), v in samples(text).items() if sample == name and wanted <= found)


def series(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of the samples ``name``."""
    return [dict(labels) for sample, labels in samples(text) if sample == name]


def types(text: str) -> dict[str, str]:
    """Family name (as ``# TYPE`` names it, ``_total`` kept for counters) -> type."""
    return {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}


def assert_promtool_clean(text: str) -> None:
    """``promtool check metrics`` (Debian's prometheus package; .ci/run installs it) finds no
    problem in ``text``: it parses, and the names, types, units and help follow Prometheus's
    conventions."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus"
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    problems = (result.stdout + result.stderr).decode().strip()
    assert result.returncode == 0 and not problems, f"promtool check metrics: {problems}"
