"""Server-sent events (text/event-stream): the one encoder of frames and the one parser of
streams, for every service and the CLI.

Encoding: :func:`frame` writes one event as ``id:``, ``event:`` and ``data:`` lines (each only
when given, in that order) and a blank line, LF line ends; :func:`json_frame` does the same
with a compact JSON payload. What each stream sends is unchanged from the hand-written
encoders this replaced (``tests/unit/test_sse.py`` pins their bytes):

- gateway ``/score``:        ``event: delta\\ndata: {"delta":"..."}\\n\\n`` ... ``event: done``
- aggregator live stream:    ``retry: 3000\\n\\n`` then ``id: 7\\nevent: metrics\\ndata: {...}\\n\\n``
- llmsim (OpenAI's format):  ``data: {"id":"chatcmpl-..",...}\\n\\n`` ... ``data: [DONE]\\n\\n``
- prompt flow's ``pf flow serve``: ``data: {"answer": "..."}\\n\\n`` per chunk (no event name),
  i.e. ``frame(json.dumps(chunk))`` with prompt flow's own JSON spelling.

Parsing: :class:`SseParser` follows the HTML living standard's rules (lines end in LF, CR or
CRLF; ``data`` lines joined with LF; a blank line dispatches; ``:`` lines are comments; an
event with no data is dropped; the last ``id`` sticks) and takes bytes in any chunking, a
UTF-8 character split across chunks included.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

# Media type and headers of a stream. The gateway names the charset; others send the bare type.
MEDIA_TYPE = "text/event-stream"
NO_BUFFERING = {
    "Cache-Control": "no-cache",
    # Tells nginx-style proxies not to buffer the stream, which would hold every event back.
    "X-Accel-Buffering": "no",
}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def frame(data: str, *, event: str | None = None, id: str | int | None = None) -> bytes:
    """One event. A line break in ``data`` starts another ``data:`` line, so the client gets
    ``data`` back exactly; ``event`` and ``id`` are single-line fields and must not hold one."""
    head = ""
    if id is not None:
        head = f"id: {_field('id', str(id))}\n"
    if event is not None:
        head += f"event: {_field('event', event)}\n"
    if "\n" in data or "\r" in data:
        data = "\ndata: ".join(_LINE_BREAK.split(data))
    return f"{head}data: {data}\n\n".encode()


# Made once: json.dumps with any non-default option builds a new encoder per call, and the
# gateway encodes one frame per token.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def json_frame(
    value: Any, *, event: str | None = None, id: str | int | None = None,
    default: Callable[[Any], Any] | None = None,
) -> bytes:
    """One event whose data is ``value`` as compact JSON (UTF-8, NaN refused: it is not JSON).
    JSON escapes line breaks, so the data is always one line."""
    if default is None:
        text = _JSON.encode(value)
    else:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default)
    if event is not None and id is None:  # the gateway's per-token frame, kept short
        return f"event: {_field('event', event)}\ndata: {text}\n\n".encode()
    return frame(text, event=event, id=id)


def comment(text: str = "") -> bytes:
    """A comment line: ignored by clients, it keeps an idle connection (and its proxies) open."""
    return f": {_field('comment', text)}\n\n".encode() if text else b":\n\n"


def retry(milliseconds: int) -> bytes:
    """Tells the client how long to wait before reconnecting after the stream breaks."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def _field(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} cannot contain a line break: {value!r}")
    return value


# -- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    name: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SseParser:
    """Bytes in (any chunking), events out."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._pending_cr = False
        self._name = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes | str) -> Iterator[SseEvent]:
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        if text:
            self._pending_cr = False
        self._buffer += text
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return
            line, end = cut
            rest = self._buffer[end:]
            if self._buffer[end - 1] == "\r" and not rest:
                self._pending_cr = True
            self._buffer = rest
            event = self._line(line)
            if event is not None:
                yield event

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            if not self._data:
                self._name = ""
                return None
            event = SseEvent(self._name or "message", "\n".join(self._data), self._id)
            self._name, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            self._id = value
        return None


def _line_end(buffer: str) -> tuple[str, int] | None:
    """(line, index after its end) for the first complete line, else None."""
    lf, cr = buffer.find("\n"), buffer.find("\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (buffer[:lf], lf + 1)
    if buffer.startswith("\n", cr + 1):
        return buffer[:cr], cr + 2
    return buffer[:cr], cr + 1


async def read_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[SseEvent]:
    """Events of a stream as they arrive, e.g. ``read_events(response.content.iter_any())``
    for an aiohttp response (no line length limit, unlike its line reader). An event the
    stream ends in the middle of is dropped, as the standard says."""
    parser = SseParser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
