"""API keys: generated with enough entropy, stored only as hashes, matched in constant time."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr, ValidationError

from shared import apikeys
from shared.apikeys import (
    ApiKeyRecord,
    bearer_token,
    generate_api_key,
    hash_api_key,
    match_api_key,
    match_api_key_owner,
    new_api_key_record,
    secret_matches,
    verify_api_key,
)


def record(key_id: str, key: str) -> ApiKeyRecord:
    return ApiKeyRecord(id=key_id, hash=hash_api_key(key), created=datetime(2025, 1, 1, tzinfo=UTC))


def test_generated_key_has_prefix_and_32_random_bytes():
    key = generate_api_key()
    assert key.startswith("pp_")
    body = key[3:]
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 32
    assert len({generate_api_key() for _ in range(1000)}) == 1000


def test_hash_is_the_stated_scheme():
    assert hash_api_key("pp_abc") == "sha256:" + hashlib.sha256(b"pp_abc").hexdigest()


def test_verify_accepts_the_key_and_rejects_others():
    key = generate_api_key()
    stored = hash_api_key(key)
    assert verify_api_key(key, stored)
    assert not verify_api_key(key + "x", stored)
    assert not verify_api_key(key[:-1], stored)
    assert not verify_api_key("", stored)
    assert not verify_api_key(stored, stored)  # the hash itself is not a key


def test_verify_uses_constant_time_comparison(monkeypatch):
    calls = []
    real = apikeys.hmac.compare_digest
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert verify_api_key("pp_k", hash_api_key("pp_k"))
    assert len(calls) == 1


@pytest.mark.parametrize("stored", ["", "pp_plaintext", "sha256:XYZ", "md5:" + "0" * 64, "sha256:" + "A" * 64])
def test_verify_rejects_a_malformed_stored_hash(stored):
    with pytest.raises(ValueError, match="stored API key hash"):
        verify_api_key("pp_k", stored)


def test_match_finds_the_right_record():
    keys = [generate_api_key() for _ in range(3)]
    records = [record(f"k{i}", key) for i, key in enumerate(keys)]
    assert match_api_key(keys[1], records) is records[1]
    assert match_api_key(keys[2], records) is records[2]
    assert match_api_key("pp_wrong", records) is None
    assert match_api_key(None, records) is None
    assert match_api_key("", records) is None
    assert match_api_key(keys[0], []) is None


def test_match_compares_every_record_without_early_exit(monkeypatch):
    keys = [generate_api_key() for _ in range(5)]
    records = [record(f"k{i}", key) for i, key in enumerate(keys)]
    calls = []
    real = apikeys.hmac.compare_digest
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    for presented in (keys[0], keys[4], "pp_wrong", None):
        calls.clear()
        match_api_key(presented, records)
        assert len(calls) == len(records)


def test_owner_match_finds_the_deployment_whose_key_was_presented(monkeypatch):
    keys = {name: [generate_api_key() for _ in range(2)] for name in ("alpha", "beta", "gamma")}
    owned = [(name, record(f"{name}-{i}", key)) for name, ks in keys.items() for i, key in enumerate(ks)]
    calls = []
    real = apikeys.hmac.compare_digest
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    for name, ks in keys.items():
        for i, key in enumerate(ks):
            calls.clear()
            found = match_api_key_owner(key, owned)
            assert found is not None and found[0] == name and found[1].id == f"{name}-{i}"
            assert len(calls) == len(owned)  # every key of every deployment, no early exit
    for wrong in ("pp_wrong", None, ""):
        calls.clear()
        assert match_api_key_owner(wrong, owned) is None
        assert len(calls) == len(owned)


def test_a_key_stored_by_two_owners_matches_neither():
    shared_key, own_key = generate_api_key(), generate_api_key()
    first, second = object(), object()
    owned = [(first, record("a", shared_key)), (second, record("b", shared_key)), (second, record("c", own_key))]
    assert match_api_key_owner(shared_key, owned) is None
    assert match_api_key_owner(own_key, owned) == (second, owned[2][1])
    # Within one owner a repeated hash is no ambiguity: the first record, as before.
    assert match_api_key_owner(shared_key, owned[1:]) == (second, owned[1][1])


def test_odd_presented_keys_never_raise():
    records = [record("k", generate_api_key())]
    for odd in ("\ud800", "ключ", "x" * 10_000, " "):
        assert match_api_key(odd, records) is None


def test_new_record_stores_only_the_hash():
    key, rec = new_api_key_record("ci", rate_limit_per_minute=30)
    assert rec.id == "ci" and rec.rate_limit_per_minute == 30
    assert verify_api_key(key, rec.hash)
    assert key not in rec.model_dump_json()
    _, other = new_api_key_record()
    assert other.id.startswith("key-") and other.rate_limit_per_minute is None


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "", "hash": hash_api_key("k"), "created": "2025-01-01T00:00:00Z"},
        {"id": "k", "hash": "sha256:short", "created": "2025-01-01T00:00:00Z"},
        {"id": "k", "hash": hash_api_key("k"), "created": "yesterday"},
        {"id": "k", "hash": hash_api_key("k"), "created": "2025-01-01T00:00:00Z", "rate_limit_per_minute": 0},
        {"id": "k", "hash": hash_api_key("k"), "created": "2025-01-01T00:00:00Z", "key": "pp_plain"},
    ],
    ids=["empty id", "short hash", "bad time", "zero rate", "plain key field"],
)
def test_bad_records_are_rejected(fields):
    with pytest.raises(ValidationError):
        ApiKeyRecord.model_validate(fields)


def test_secret_matches_only_the_secret_and_compares_digests_in_constant_time(monkeypatch):
    secret = SecretStr("admin-" + "k" * 26)
    calls = []
    real = apikeys.hmac.compare_digest
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert secret_matches("admin-" + "k" * 26, secret)
    for wrong in ["admin-" + "k" * 25, "admin-" + "k" * 27, "", None]:
        assert not secret_matches(wrong, secret)
    assert not secret_matches("anything", None)
    # Every comparison, even of nothing, ran on two 32-byte digests: lengths never show.
    assert len(calls) == 5
    assert all(len(a) == len(b) == 32 for a, b in calls)


@pytest.mark.parametrize(("value", "expected"), [
    ("Bearer pp_abc", "pp_abc"),
    ("  bearer   pp_abc  ", "pp_abc"),
    ("Basic cHA6YWJj", None),
    ("Bearer", None),
    ("Bearer    ", None),
    ("Bearer " + "x" * 513, None),
    ("", None),
    (None, None),
])
def test_bearer_token(value, expected):
    assert bearer_token(value) == expected
