"""``promptpulse tail DEPLOYMENT``: answers as they stream, one block per request.

Reads two topics from their end: the tokens topic (the token chunks the gateway publishes for
streamed requests, decoded with shared.events.codec) and the inference topic, where only the
response events of requests being shown are decoded (the ``pp-event-type`` and
``pp-deployment`` headers let everything else be skipped unread). A request's block is
finished once its response was seen and no chunk came for a moment: the two topics are read
independently, so a response can arrive before the last chunks.

In a terminal, the requests being answered are shown live, text growing as tokens arrive, and
each finished block is printed above them. Piped, each block is printed when it is finished.
Only streamed requests have token chunks; non-streamed answers are not shown. A redacted
output's chunks carry no text, only token counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

SETTLE_SECONDS = 1.0  # quiet time after the response before a block is finished
IDLE_SECONDS = 120.0  # a request with no response for this long is shown as it is
ORPHAN_SECONDS = 30.0  # how long a response waits for its request's chunks
LIVE_SHOWN = 6  # requests shown at once in the live view


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tail", help="watch answers stream token by token (reads the tokens topic)",
        description="Show the answers of DEPLOYMENT's streamed requests as their tokens are published, "
                    "one block per request, until Ctrl-C. Kafka from PROMPTPULSE_KAFKA__* settings.",
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("--variant", metavar="ID", help="only this variant")
    parser.set_defaults(func=main)


@dataclass
class Stream:
    request_id: str
    deployment: str
    variant: str
    started: float
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    redacted_tokens: int = 0
    next_sequence: int = 0
    gaps: int = 0
    last_activity: float = 0.0
    response: dict[str, Any] | None = None

    def body(self) -> str:
        text = "".join(self.text)
        if self.redacted_tokens:
            text += f"[redacted: {self.redacted_tokens} tokens]"
        return text


class Tail:
    """Which requests are streaming, their text so far, and which blocks are finished. Pure:
    the caller passes decoded fields and the time."""

    def __init__(self, deployment: str, variant: str | None = None) -> None:
        self.deployment = deployment
        self.variant = variant
        self.streams: dict[str, Stream] = {}
        self.orphans: dict[str, tuple[float, dict[str, Any]]] = {}

    def wants(self, deployment: str | None, variant: str | None = None) -> bool:
        if deployment is not None and deployment != self.deployment:
            return False
        return self.variant is None or variant is None or variant == self.variant

    def chunk(self, request_id: str, variant: str, sequence: int, text: str, token_count: int, now: float) -> None:
        stream = self.streams.get(request_id)
        if stream is None:
            stream = self.streams[request_id] = Stream(request_id, self.deployment, variant, now)
            orphan = self.orphans.pop(request_id, None)
            if orphan is not None:
                stream.response = orphan[1]
        if sequence > stream.next_sequence:
            stream.gaps += 1
            stream.text.append(" […] ")
        stream.next_sequence = max(stream.next_sequence, sequence + 1)
        if text:
            stream.text.append(text)
        elif token_count:
            stream.redacted_tokens += token_count
        stream.tokens += token_count
        stream.last_activity = now

    def response(self, request_id: str, response: dict[str, Any], now: float) -> None:
        stream = self.streams.get(request_id)
        if stream is None:  # its chunks may still come (another topic), or it was not streamed
            self.orphans[request_id] = (now, response)
            return
        stream.response = response
        stream.last_activity = max(stream.last_activity, now)

    def finished(self, now: float) -> list[Stream]:
        """Blocks to print now, oldest first; they are forgotten."""
        done = [s for s in self.streams.values()
                if (s.response is not None and now - s.last_activity >= SETTLE_SECONDS)
                or now - s.last_activity >= IDLE_SECONDS]
        for stream in done:
            del self.streams[stream.request_id]
        for request_id, (seen, _) in list(self.orphans.items()):
            if now - seen >= ORPHAN_SECONDS:
                del self.orphans[request_id]
        return sorted(done, key=lambda s: s.started)

    def active(self) -> list[Stream]:
        return sorted(self.streams.values(), key=lambda s: s.started)[-LIVE_SHOWN:]


def header_line(stream: Stream) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(stream.started))
    return f"── {stream.request_id} · {stream.deployment}/{stream.variant or '?'} · {clock} ──"


def footer_line(stream: Stream) -> str:
    from services.cli.formatting import millis

    response = stream.response
    if response is None:
        return f"── no response seen · {stream.tokens} tokens streamed ──"
    parts = [response.get("status", "?"), f"{stream.tokens} tokens streamed", millis(response.get("latency_ms"))]
    if response.get("time_to_first_token_ms") is not None:
        parts.append(f"first token {millis(response['time_to_first_token_ms'])}")
    if response.get("error_type"):
        parts.append(f"{response['error_type']}: {response.get('error_message', '')}")
    if stream.gaps:
        parts.append(f"{stream.gaps} gap(s) in the chunks")
    return "── " + " · ".join(parts) + " ──"


def block_text(stream: Stream) -> str:
    return f"{header_line(stream)}\n{stream.body()}\n{footer_line(stream)}"


def response_fields(event: Any) -> dict[str, Any]:
    from shared.events.messages import InferenceStatus

    status = InferenceStatus.Name(event.status).removeprefix("INFERENCE_STATUS_").lower()
    return {
        "status": status,
        "latency_ms": event.latency_ms,
        "time_to_first_token_ms": event.time_to_first_token_ms if event.HasField("time_to_first_token_ms") else None,
        "error_type": event.error_type or None,
        "error_message": event.error_message or None,
    }


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _tail(args), stop_ok=True)


async def _tail(args: argparse.Namespace) -> int:
    import asyncio

    from services.cli.kafkaread import DeletedTopics, topic_reader
    from services.cli.output import console, emit, notice
    from shared.events.codec import decode
    from shared.events.errors import EventDecodeError
    from shared.events.headers import deployment as deployment_header
    from shared.events.headers import event_type
    from shared.events.messages import InferenceResponse, TokenChunk

    state = Tail(args.deployment, args.variant)
    out = console()
    live = None
    if out.is_terminal:
        from rich.live import Live

        live = Live(console=out, refresh_per_second=8, transient=True)

    def view() -> Any:
        from rich.console import Group
        from rich.panel import Panel

        panels = [Panel(s.body()[-600:] or "…", title=header_line(s).strip("─ "), title_align="left")
                  for s in state.active()]
        return Group(*panels)

    def flush(now: float) -> None:
        for stream in state.finished(now):
            if live is not None:
                live.console.print(block_text(stream))
            else:
                emit(block_text(stream))
        if live is not None:
            live.update(view())

    async with topic_reader(["tokens", "inference"]) as (consumer, names):
        tokens_topic = names[0]
        scope = f"{args.deployment}" + (f"/{args.variant}" if args.variant else "")
        notice(f"tailing streamed answers of {scope} ({tokens_topic}); Ctrl-C to stop")
        if live is not None:
            live.start()
        deleted = DeletedTopics(consumer, names)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                if not batches:
                    deleted.check()
                now = time.time()
                for batch in batches.values():
                    for record in batch:
                        try:
                            kind = event_type(record.headers)
                            if kind not in ("token.chunk", "inference.response"):
                                continue
                            if not state.wants(deployment_header(record.headers)):
                                continue
                            request_id = record.key.decode() if record.key else None
                            if kind == "inference.response" and request_id not in state.streams:
                                if request_id is None or len(state.orphans) > 1000:
                                    continue
                            event = decode(record.value, record.headers)
                        except (EventDecodeError, UnicodeDecodeError):
                            continue  # not ours to judge: the services dead-letter bad records
                        if not isinstance(event, TokenChunk | InferenceResponse):
                            continue  # decoded as its type header says, so never the case
                        meta = event.meta
                        if not state.wants(meta.deployment, meta.variant):
                            continue
                        if isinstance(event, TokenChunk):
                            state.chunk(meta.request_id, meta.variant, event.sequence, event.text, event.token_count, now)
                        elif isinstance(event, InferenceResponse):
                            state.response(meta.request_id, response_fields(event), now)
                flush(now)
                await asyncio.sleep(0)
        finally:
            if live is not None:
                live.stop()
            for stream in sorted(state.streams.values(), key=lambda s: s.started):
                sys.stdout.write(block_text(stream) + "\n")
            sys.stdout.flush()
