"""Who is calling: the API key a request presents, matched against the deployment's key hashes.

A key comes in ``Authorization: Bearer <key>`` or, as Azure OpenAI clients send it,
``api-key: <key>``. Every failure (no header, another scheme, an unknown key, a key of another
deployment) gets the same 401, so a caller learns nothing about which part was wrong.
Matching is :func:`shared.apikeys.match_api_key`: constant time, every stored hash compared.
``POST /score`` has no deployment in its URL: :func:`key_owner` finds the deployment whose key
was presented, comparing the key's hash with every key of every deployment the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from shared.apikeys import (
    MAX_PRESENTED_LENGTH,
    ApiKeyRecord,
    bearer_token,
    match_api_key,
    match_api_key_owner,
)

Owner = TypeVar("Owner")

AUTHORIZATION = "Authorization"
API_KEY_HEADER = "api-key"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in the request's headers, or None. ``Authorization`` wins when both are sent."""
    authorization = headers.get(AUTHORIZATION)
    if authorization is not None:
        return bearer_token(authorization)
    key = (headers.get(API_KEY_HEADER) or "").strip()
    if not key or len(key) > MAX_PRESENTED_LENGTH:
        return None
    return key


def authenticate(headers: Mapping[str, str], records: Iterable[ApiKeyRecord]) -> ApiKeyRecord | None:
    """The key record the request authenticates as, or None (answer 401 without details).

    Even a request with no usable key runs the full comparison, so a missing header and a
    wrong key take the same time.
    """
    return match_api_key(presented_key(headers), records)


def key_owner(headers: Mapping[str, str], owners: Iterable[tuple[Owner, Iterable[ApiKeyRecord]]]
              ) -> tuple[Owner, ApiKeyRecord] | None:
    """The owner (a deployment) of the presented key and its record, or None (answer 401)."""
    pairs = ((owner, record) for owner, records in owners for record in records)
    return match_api_key_owner(presented_key(headers), pairs)
