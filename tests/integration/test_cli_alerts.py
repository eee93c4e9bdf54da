"""`promptpulse alerts subscribe` against real Kafka: a malformed record on the alerts topic is
shown as such and skipped, and the follower goes on to the alerts after it (issue 15, finding 4:
it used to die on a non-numeric ``value``)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.events.builders import new_event_id
from shared.events.codec import encode_alert_json
from shared.events.messages import Alert, AlertState, AlertStatistic
from shared.kafka import make_producer
from shared.settings import KafkaSettings, ServiceSettings
from shared.topics import Topics, delete_topics, ensure_topics

REPO = Path(__file__).resolve().parents[2]


def _alert(monitor_id: str, state: AlertState) -> Alert:
    alert = Alert(event_id=new_event_id(), monitor_id=monitor_id, deployment="demo", variant="variant_1",
                  metric="relevance", statistic=AlertStatistic.ALERT_STATISTIC_AVERAGE, state=state,
                  value=3.12, threshold=3.5, sample_count=14)
    alert.event_time.FromDatetime(datetime.now(UTC))
    return alert


@pytest.mark.timeout(120)
async def test_a_malformed_alert_is_shown_and_skipped_and_the_follower_goes_on(
    settings: ServiceSettings, unique_name: str
) -> None:
    prefix = f"{unique_name}."
    ours = settings.model_copy(update={"kafka": KafkaSettings(
        bootstrap_servers=settings.kafka.bootstrap_servers, topic_prefix=prefix)})
    topic = Topics.from_settings(ours).alerts
    await ensure_topics(ours, [topic])
    resolved = _alert("demo-before", AlertState.ALERT_STATE_RESOLVED)
    non_numeric = json.loads(encode_alert_json(_alert("demo-broken", AlertState.ALERT_STATE_FIRING)))
    non_numeric["value"] = "high"
    firing = _alert("demo-relevance-variant_1", AlertState.ALERT_STATE_FIRING)
    records = [encode_alert_json(resolved), json.dumps(non_numeric).encode(), b"\xff not json",
               encode_alert_json(firing)]
    producer = make_producer(ours, "it-alerts")
    await producer.start()
    try:
        for value in records:
            await producer.send_and_wait(topic, value=value, key=b"m", partition=0)
    finally:
        await producer.stop()

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_")}
    env |= {"PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "PROMPTPULSE_KAFKA__TOPIC_PREFIX": prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "alerts", "subscribe", "--from-beginning", "--exit-on-firing",
        cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
        await delete_topics(ours, [topic])
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stdout.splitlines() if line.strip()]
    # The alerts before and after the bad records, in order; the firing one ends the run.
    assert len(lines) == 2 and "demo-before" in lines[0] and "RESOLVED" in lines[0], stdout
    assert "FIRING" in lines[1] and "demo-relevance-variant_1" in lines[1] and "3.12 < 3.5" in lines[1]
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped a malformed alert")]
    assert len(skipped) == 2, stderr
    assert f"{topic}/0@1" in skipped[0] and "value" in skipped[0]
    assert f"{topic}/0@2" in skipped[1]
