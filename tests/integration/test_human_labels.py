"""People's labels against the judges: feedback labels in, agreement per evaluator version out.

The whole stack as real processes; labels go in through the gateway's feedback route and
through `promptpulse annotate`, the figures come out of the API and `promptpulse agreement`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.live_stack import REPO, LiveStack, StackOptions, live_stack

pytestmark = pytest.mark.integration

REQUESTS = 8


async def cli(stack: LiveStack, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO, env=stack.cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def feedback(stack: LiveStack, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{stack.gateway.url}/v1/deployments/demo/feedback", json=body, headers={"api-key": stack.demo_key},
    ) as resp:
        return resp.status, await resp.json()


async def test_labels_from_people_measure_each_judge_version(tmp_path: Path) -> None:
    async with live_stack(tmp_path, StackOptions(sampling_rate=1.0, metrics=["relevance"], monitors=[])) as stack:
        ids = []
        for index in range(REQUESTS):
            status, body = await stack.score(f"When does parcel {index} arrive?")
            assert status == 200
            ids.append(body["request_id"])

        async def judged() -> dict[str, float] | None:
            scores = {}
            for request_id in ids:
                doc = await stack.api(f"/v1/requests/{request_id}")
                relevance = [e for e in doc.get("evaluations") or [] if e["metric"] == "relevance"
                             and e.get("outcome") == "scored"]
                if not relevance:
                    return None
                scores[request_id] = float(relevance[0]["score"])
            return scores

        scores = await stack.wait_for(judged, 120, "every request judged on relevance")

        # Bad labels: a 400 naming the label, nothing recorded.
        status, body = await feedback(stack, {"request_id": ids[0], "labels": {"nonsense": 3}})
        assert status == 400 and body["error"]["field"] == "labels.nonsense"
        status, body = await feedback(stack, {"request_id": ids[0], "labels": {"relevance": 9}})
        assert status == 400 and body["error"]["field"] == "labels.relevance"

        # Half the people agree with the judge, half give one point less: judge - person = +0.5.
        # The first half is first sent wrong (the judge's score), then corrected: the latest counts.
        expected_exact = 0
        for position, request_id in enumerate(ids):
            judge = scores[request_id]
            person = judge - 1 if position % 2 == 0 and judge > 1 else judge
            expected_exact += person == judge
            if position % 2 == 0:
                status, _ = await feedback(stack, {"request_id": request_id, "labels": {"relevance": judge}})
                assert status == 202
                await asyncio.sleep(0.05)
            if position < 2:  # through the CLI, as a reviewer would
                code, out, err = await cli(stack, "annotate", request_id, f"relevance={int(person)}",
                                           "--comment", "reviewed")
                assert code == 0, err
                assert "labels recorded" in out
            else:
                status, _ = await feedback(stack, {"request_id": request_id, "labels": {"relevance": person}})
                assert status == 202
        differences = [scores[r] - (scores[r] - 1 if i % 2 == 0 and scores[r] > 1 else scores[r])
                       for i, r in enumerate(ids)]

        async def reported() -> dict[str, Any] | None:
            doc = await stack.api("/v1/deployments/demo/agreement?metric=relevance&min_labels=2")
            rows = doc["agreement"]
            return rows[0] if rows and rows[0]["labelled"] == REQUESTS else None

        row = await stack.wait_for(reported, 60, "the agreement of relevance over every labelled request")
        assert row["enough"]
        assert row["evaluator_version"]  # per evaluator version
        assert row["exact_match_rate"] == pytest.approx(expected_exact / REQUESTS)
        assert row["mean_difference"]["value"] == pytest.approx(sum(differences) / REQUESTS)

        code, out, err = await cli(stack, "agreement", "demo", "--min-labels", "2")
        assert code == 0, err
        assert "relevance" in out and f"{expected_exact / REQUESTS:.2f}" in out

        # Below the minimum, no figures, and the reason.
        doc = await stack.api(f"/v1/deployments/demo/agreement?metric=relevance&min_labels={REQUESTS + 1}")
        assert doc["agreement"][0]["enough"] is False and "weighted_kappa" not in doc["agreement"][0]
