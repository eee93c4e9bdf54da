"""Checks on parsed JSON that both HTTP services apply to request bodies."""

from __future__ import annotations

from typing import Any


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in a parsed JSON value (keys included) is not valid Unicode text."""
    pending = [value]
    while pending:  # iterative: the value may be nested up to the parser's limit
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False
