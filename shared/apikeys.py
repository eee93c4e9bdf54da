"""API keys for deployments: generate, hash for storage, verify in constant time.

A key is ``pp_`` followed by 32 random bytes in URL-safe base64 (43 characters). Only its hash is
ever stored (in a deployment file or its ``api_keys_file``); the key itself is shown once, when
it is created.

Why SHA-256 and not bcrypt/argon2: those are slow on purpose to protect *low-entropy* secrets
(passwords) against guessing. Our keys carry 256 bits of randomness, so guessing is hopeless
whatever the hash costs, and a slow hash would only burn ~100 ms of gateway CPU on every
request, which also hands anyone with bogus keys a cheap way to exhaust the gateway. GitHub
and Stripe-style tokens are stored the same way. The ``sha256:`` prefix names the scheme so a
later scheme can sit beside it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

KEY_PREFIX = "pp_"
KEY_ENTROPY_BYTES = 32
HASH_SCHEME = "sha256"
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# A key is 46 characters; anything far longer is not one of ours and is not worth hashing.
MAX_PRESENTED_LENGTH = 512
Owner = TypeVar("Owner")


class ApiKeyRecord(BaseModel):
    """One stored key of a deployment: its id, hash and optional rate limit. Never the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=KEY_ID_PATTERN, description="Name used to list and revoke the key.")
    hash: str = Field(
        pattern=_HASH_RE.pattern, description="`sha256:` + hex SHA-256 of the key (hash_api_key)."
    )
    created: datetime = Field(description="When the key was created (ISO 8601).")
    rate_limit_per_minute: int | None = Field(
        None, ge=1, description="Requests per minute allowed with this key; unset means no limit."
    )


def generate_api_key() -> str:
    """A new random key: ``pp_`` + 32 bytes of URL-safe randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_ENTROPY_BYTES)


def hash_api_key(key: str) -> str:
    """The storable form of a key: ``sha256:<hex>``."""
    if not isinstance(key, str) or not key:
        raise ValueError("an API key must be a non-empty string")
    # surrogatepass: a header decoded oddly must hash (and fail to match), never raise.
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{HASH_SCHEME}:{digest}"


def _check_stored_hash(stored_hash: str) -> None:
    if not isinstance(stored_hash, str) or not _HASH_RE.match(stored_hash):
        raise ValueError("stored API key hash is not in the 'sha256:<64 hex digits>' form")


def verify_api_key(presented: str, stored_hash: str) -> bool:
    """True when ``presented`` is the key behind ``stored_hash``; constant time in the hash."""
    _check_stored_hash(stored_hash)
    if not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(hash_api_key(presented).encode(), stored_hash.encode())


def bearer_token(header_value: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` value, or None.

    None for another scheme, an empty token or one longer than MAX_PRESENTED_LENGTH.
    """
    scheme, _, credentials = (header_value or "").strip().partition(" ")
    token = credentials.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_PRESENTED_LENGTH:
        return None
    return token


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def secret_matches(presented: str | None, secret: SecretStr | None) -> bool:
    """True when ``presented`` is ``secret`` (a configured key such as an admin key).

    Compares SHA-256 digests with ``hmac.compare_digest``, so neither the content nor the length
    of the secret shows in the time taken; an absent ``presented`` is still compared, so a
    missing key and a wrong one take the same time.
    """
    if secret is None:
        return False
    matches = hmac.compare_digest(_digest(presented or ""), _digest(secret.get_secret_value()))
    return bool(presented) and matches


def match_api_key(presented: str | None, records: Iterable[ApiKeyRecord]) -> ApiKeyRecord | None:
    """The record whose key was presented, or None.

    Every record is compared in constant time and the loop never exits early, so the time
    taken does not depend on which record matched or how close a wrong key came.
    """
    found = match_api_key_owner(presented, ((None, record) for record in records))
    return found[1] if found is not None else None


def match_api_key_owner(
    presented: str | None, owned: Iterable[tuple[Owner, ApiKeyRecord]]
) -> tuple[Owner, ApiKeyRecord] | None:
    """The (owner, record) pair whose key was presented, or None; owners are e.g. deployments.

    The presented key is hashed once and compared with every record of every owner, in constant
    time each and without exiting early. A key stored by two owners matches neither (None): a
    request authenticated by its key alone must not be routed by the order of a list.
    """
    # "z" is not a hex digit, so an absent key can equal no validated record's hash.
    if isinstance(presented, str) and presented:
        candidate = hash_api_key(presented)
    else:
        candidate = HASH_SCHEME + ":" + "z" * 64
    candidate_bytes = candidate.encode()
    found: tuple[Owner, ApiKeyRecord] | None = None
    ambiguous = False
    for owner, record in owned:
        if hmac.compare_digest(candidate_bytes, record.hash.encode()):
            if found is None:
                found = (owner, record)
            elif found[0] is not owner:
                ambiguous = True
    return None if ambiguous else found


def new_api_key_record(
    key_id: str | None = None, rate_limit_per_minute: int | None = None
) -> tuple[str, ApiKeyRecord]:
    """A fresh key and the record to store for it. Show the key once; store only the record."""
    key = generate_api_key()
    record = ApiKeyRecord(
        id=key_id or f"key-{secrets.token_hex(4)}",
        hash=hash_api_key(key),
        created=datetime.now(UTC).replace(microsecond=0),
        rate_limit_per_minute=rate_limit_per_minute,
    )
    return key, record
