"""The CLI's Kafka readers end, saying why, when their topics are deleted under them.

aiokafka reports nothing in that case: the reader would sit there, printing nothing, while the
client refreshes its metadata in a tight loop (measured: 60% of a core)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from shared.settings import KafkaSettings, ServiceSettings
from shared.topics import Topics, delete_topics, ensure_topics

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [["alerts", "subscribe"], ["tail", "demo"]])
async def test_a_reader_whose_topic_is_deleted_exits_4_naming_it(
    settings: ServiceSettings, unique_name: str, command: list[str]
) -> None:
    prefix = f"{unique_name}."
    ours = settings.model_copy(update={"kafka": KafkaSettings(
        bootstrap_servers=settings.kafka.bootstrap_servers, topic_prefix=prefix)})
    topics = Topics.from_settings(ours)
    names = [topics.alerts, topics.tokens, topics.inference]
    await ensure_topics(ours, names)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_")}
    env |= {"PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "PROMPTPULSE_KAFKA__TOPIC_PREFIX": prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *command, cwd=REPO, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        first = await asyncio.wait_for(process.stderr.readline(), 60)
        assert b"Ctrl-C to stop" in first, first  # reading: its positions are fixed
        await delete_topics(ours, names)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    text = err.decode()
    assert process.returncode == 4, (process.returncode, text)
    assert "was deleted while being read" in text and prefix in text and "Traceback" not in text
