"""Images as prompt flow passes them: flow inputs of type ``image``, image values inside inputs,
``Image`` objects Python nodes receive and return, and the ``![image](...)`` lines of chat
templates that become ``image_url`` content parts.

On the wire (request bodies, flow outputs) an image is prompt flow's one-key object:
``{"data:image/png;base64": "<base64>"}`` or ``{"data:image/png;url": "https://..."}``. A flow
input of type ``image`` also takes a URL or a ``data:image/...`` URI string. Nothing here fetches
a URL: a URL image is passed on to the model endpoint as its URL.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

_KEY = re.compile(r"^data:(image/[\w.+*-]+);(base64|url)$")
_DATA_URI = re.compile(r"^data:(image/[\w.+*-]+);base64,(.*)$", re.DOTALL)
# prompt flow's markdown for an image in a chat prompt: alone or inside a line of text.
MARKDOWN = re.compile(r"!\[\s*image\s*\]\(\s*((?:https?://|data:image/)[^)\s]+)\s*\)")


class Image(bytes):
    """Stand-in for ``promptflow.contracts.multimedia.Image``: the image's bytes and MIME type
    (a URL image has no bytes here, only its ``source_url``)."""

    mime_type: str
    source_url: str | None

    def __new__(cls, value: bytes, mime_type: str | None = None, source_url: str | None = None) -> Image:
        image = super().__new__(cls, value)
        image.mime_type = mime_type or "image/*"
        image.source_url = source_url
        return image

    def to_url(self) -> str:
        """A URL a model endpoint accepts: the source URL, else a base64 data URI."""
        if self.source_url and not len(self):
            return self.source_url
        return f"data:{self.mime_type};base64,{base64.b64encode(bytes(self)).decode('ascii')}"

    def to_json(self) -> dict[str, str]:
        """prompt flow's serialised form, as flow outputs carry it."""
        if self.source_url and not len(self):
            return {f"data:{self.mime_type};url": self.source_url}
        return {f"data:{self.mime_type};base64": base64.b64encode(bytes(self)).decode("ascii")}

    def __str__(self) -> str:  # how a template renders it, inside the markdown: ![image]({{image}})
        return self.to_url()

    def markdown(self) -> str:
        """How it renders as an item of a list (prompt flow's chat-with-image question list)."""
        return f"![image]({self.to_url()})"

    def __repr__(self) -> str:
        return f"Image({self.mime_type}, {len(self)} bytes{', ' + self.source_url if self.source_url else ''})"


def is_image_object(value: Any) -> bool:
    """Whether ``value`` is prompt flow's one-key image object."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value)), str) \
        and _KEY.match(next(iter(value))) is not None and isinstance(next(iter(value.values())), str)


def from_value(value: Any) -> Image:
    """An :class:`Image` from an image object, a URL or a data URI; raises ValueError."""
    if is_image_object(value):
        [(key, data)] = value.items()
        match = _KEY.match(key)
        assert match is not None
        mime, kind = match.groups()
        if kind == "url":
            return from_value(data) if data.startswith("data:") else _url_image(data, mime)
        return Image(_decode(data), mime)
    if isinstance(value, str):
        data_uri = _DATA_URI.match(value.strip())
        if data_uri:
            return Image(_decode(data_uri.group(2)), data_uri.group(1))
        if value.startswith(("https://", "http://")):
            return _url_image(value.strip(), "image/*")
    raise ValueError("must be an image: a URL, a data:image/... URI, or {\"data:image/png;base64\": ...} "
                     "/ {\"data:image/png;url\": ...}")


def _url_image(url: str, mime: str) -> Image:
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        raise ValueError(f"{url[:80]!r} is not an http(s) URL")
    return Image(b"", mime, source_url=url)


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the image's base64 data does not decode") from None


def content_parts(text: str) -> str | list[dict[str, Any]]:
    """A message's content: the text itself, or text and ``image_url`` parts where it holds
    image markdown (the OpenAI chat format for images, as prompt flow's vision tools send)."""
    if "![" not in text or not MARKDOWN.search(text):
        return text
    parts: list[dict[str, Any]] = []
    position = 0
    for match in MARKDOWN.finditer(text):
        before = text[position:match.start()].strip()
        if before:
            parts.append({"type": "text", "text": before})
        parts.append({"type": "image_url", "image_url": {"url": match.group(1)}})
        position = match.end()
    after = text[position:].strip()
    if after:
        parts.append({"type": "text", "text": after})
    return parts


def to_output(value: Any) -> Any:
    """A node output fit for JSON: images (at any depth) in prompt flow's one-key form."""
    if isinstance(value, Image):
        return value.to_json()
    if isinstance(value, list):
        return [to_output(v) for v in value]
    if isinstance(value, dict):
        return {k: to_output(v) for k, v in value.items()}
    return value
