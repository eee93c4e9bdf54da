"""Re-judging past traffic under a flex evaluation flow's and a prompty evaluator's new version
(real broker, llmsim as the judge): each is versioned by its files, and a RejudgeCommand judges
every request of the window once under the new version, as for the other kinds."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from shared.deployments import load_deployment
from tests.integration.test_processor_flex_evaluators import QUALITY
from tests.integration.test_processor_harness import (
    Producer,
    evaluations,
    read_topic,
    stage,
)
from tests.integration.test_processor_prompty_evaluators import GROUNDED
from tests.integration.test_processor_rejudge import command, judged_window, send_command


def spec(quality_folder: Path, prompty: Path) -> dict[str, Any]:
    evaluators = [{**QUALITY, "flow": str(quality_folder)}, {**GROUNDED, "prompty": str(prompty)}]
    return {"shop": {"metrics": [], "evaluators": evaluators, "sampling_rate": 0.5}}


def versions(folder: Path) -> dict[str, str]:
    evaluation = load_deployment(folder / "shop.yaml", check_flow=False).evaluation
    assert evaluation is not None
    return {e.name: e.version for e in evaluation.all_evaluators()}


async def test_a_window_is_rejudged_under_new_flex_and_prompty_versions(tmp_path: Path) -> None:
    quality = tmp_path / "evaluators" / "quality"
    shutil.copytree(Path(QUALITY["flow"]), quality)
    prompty = tmp_path / "evaluators" / "grounded.prompty"
    shutil.copy2(GROUNDED["prompty"], prompty)
    async with stage(tmp_path, spec(quality, prompty)) as st:
        old = versions(st.deployments_dir)
        ids = [f"r-{i:02d}" for i in range(8)]
        live, start, end = await judged_window(st, ids, 3)
        assert {e.meta.request_id for e in live} < set(ids), "the window needs unsampled requests"

        # A file of each changes: the flex flow's prompt, the prompty's parameters.
        prompt = quality / "rate_groundedness.md"
        prompt.write_text(prompt.read_text().replace("on a score from 1 to 5", "strictly, on a score from 1 to 5"))
        prompty.write_text(prompty.read_text().replace("max_tokens: 120", "max_tokens: 100"))
        new = versions(st.deployments_dir)
        assert new["quality"] != old["quality"] and new["grounded"] != old["grounded"]
        async with st.processor(), Producer(st.kafka) as producer:
            await send_command(producer, st.topics.rejudge_commands, command("rj-flex", new["quality"], start, end, evaluator="quality"))
            await send_command(producer, st.topics.rejudge_commands,
                               command("rj-prompty", new["grounded"], start, end, evaluator="grounded"))
            found = evaluations(await read_topic(
                st.kafka, st.topics.evaluations,
                lambda rows: sum(1 for e in evaluations(rows) if e.rejudge_id) >= 3 * len(ids), within=90, linger=2.0))
    flex = [e for e in found if e.rejudge_id == "rj-flex"]
    assert Counter((e.meta.request_id, e.metric) for e in flex) == Counter(
        (r, m) for r in ids for m in ("quality.groundedness", "quality.concise"))
    assert {(e.evaluator, e.evaluator_version) for e in flex} == {("quality", new["quality"])}
    prompty_events = [e for e in found if e.rejudge_id == "rj-prompty"]
    assert Counter(e.meta.request_id for e in prompty_events) == Counter(ids)
    assert {(e.evaluator, e.evaluator_version) for e in prompty_events} == {("grounded", new["grounded"])}
    assert all(e.WhichOneof("outcome") == "scored" for e in flex + prompty_events)
