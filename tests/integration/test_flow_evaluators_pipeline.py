"""The two fixture evaluation flows through the whole pipeline: the processor judges live
requests with them (real broker, llmsim), the aggregator ingests their outcomes (real broker and
PostgreSQL), the query API shows each output as a metric on its own scale, and a monitor on one
of them fires. Figures are worked out from the requests sent, never read back from the code."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import aiohttp
import yaml
from aiohttp import web

from services.aggregator.app import create_app
from services.aggregator.db.pool import create_pool
from services.aggregator.monitors.service import MonitorService
from services.llmsim.judge import JudgeRequest, judge
from shared.deployments import load_deployments
from shared.events.builders import dict_to_struct, new_meta
from shared.events.messages import InferenceRequest
from shared.settings import KafkaSettings
from shared.topics import Topics, delete_topics, ensure_topics
from tests.integration.test_aggregator_monitors import minute_base, monitor_settings, step
from tests.integration.test_processor_flow_evaluators import ACCURACY, ANSWER, GROUNDED
from tests.integration.test_processor_harness import (
    QA,
    Producer,
    read_evaluations,
    response_event,
    stage,
)
from tests.support.aggregator import create_topics, uuid7_at, wait_caught_up

READ_KEY = "read-" + uuid4().hex
ACCURACY_PASS_RATE = {"id": "accuracy-pass", "statistic": "pass_rate", "metric": "accuracy.grade",
                      "threshold": 0.8, "window": "5m", "min_samples": 3}
# (truth, predicted): graded Correct once, Incorrect three times.
PREDICTIONS = [("Billing", "billing"), ("Billing", "Shipping"), ("Returns", "Billing"), ("Shipping", "Returns")]


async def test_fixture_flows_metrics_in_the_api_and_a_monitor_firing(fresh_database: str, tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {}}) as st:
        path = st.deployments_dir / "shop.yaml"
        document = yaml.safe_load(path.read_text())
        document["evaluation"].update(metrics=[], evaluators=[GROUNDED, ACCURACY])
        document["monitors"] = [ACCURACY_PASS_RATE]
        path.write_text(yaml.safe_dump(document))
        evaluation = load_deployments(st.deployments_dir, check_flow=False)["shop"].evaluation
        assert evaluation is not None
        version = {e.name: e.version for e in evaluation.all_evaluators()}

        settings = monitor_settings(fresh_database, st.deployments_dir, read_key=READ_KEY)
        settings = settings.model_copy(update={"kafka": KafkaSettings(topic_prefix=st.prefix, partitions=3)})
        topics = await create_topics(settings)
        await ensure_topics(settings, [Topics.from_settings(settings).alerts])
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        pool = await create_pool(settings)
        try:
            base = minute_base()
            start = base + timedelta(seconds=5)
            rng = random.Random(13)
            async with st.processor(), Producer(st.kafka) as producer:
                events = []
                for truth, predicted in PREDICTIONS:
                    meta = new_meta(request_id=uuid7_at(start, rng), deployment="shop", request_start_time=start)
                    request = InferenceRequest(meta=meta, inputs=dict_to_struct({**QA, "truth_category": truth}))
                    events += [request, response_event(request, {"answer": ANSWER, "category": predicted})]
                await producer.send(st.topics.inference, events)
                found = await read_evaluations(st.kafka, st.topics, 2 * len(PREDICTIONS))
            assert {e.WhichOneof("outcome") for e in found} == {"scored"}
            await wait_caught_up(settings)

            expected = float(judge(JudgeRequest(metric="groundedness", answer=ANSWER, question=QA["question"],
                                                context=QA["context"], ground_truth="")).score)
            window = f"from={base.isoformat().replace('+00:00', 'Z')}&to={(base + timedelta(minutes=3)).isoformat().replace('+00:00', 'Z')}"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/v1/deployments/shop/metrics?{window}",
                                    headers={"Authorization": f"Bearer {READ_KEY}"}) as response:
                    body = await response.json()
                    assert response.status == 200, body
            quality = body["overview"]["quality"]
            grounded, grade = quality["grounded.groundedness"], quality["accuracy.grade"]
            assert grounded["version"] == version["grounded"] and grade["version"] == version["accuracy"]
            assert (grounded["samples"], grounded["average"]) == (4, expected)
            assert grounded["scale"] == {"type": "integer", "min": 1.0, "max": 10.0}
            assert grounded["pass_rate"] == (1.0 if expected >= 6 else 0.0)  # pass: at_least 6
            assert (grade["samples"], grade["average"], grade["pass_rate"]) == (4, 0.25, 0.25)
            assert grade["scores"] == {"Correct": 1, "Incorrect": 3}

            service = MonitorService(settings, pool)
            await service.open()
            try:
                await service.sync_files()
                tick = await service.once(step(base, 5))
            finally:
                await service.close()
            windows = {r["monitor_id"]: r for r in await pool.fetch("SELECT * FROM monitor_windows")}
            states = {r["monitor_id"]: r["state"] for r in await pool.fetch("SELECT * FROM monitor_states")}
        finally:
            await pool.close()
            await runner.cleanup()
            await delete_topics(settings, [topics.feedback, topics.spans, Topics.from_settings(settings).alerts])
    assert tick.alerts == 1
    assert windows["accuracy-pass"]["value"] == 0.25 and windows["accuracy-pass"]["violated"]
    assert windows["accuracy-pass"]["evaluator_version"] == version["accuracy"]
    assert states == {"accuracy-pass": "firing"}
