"""The generic webhook: the alert's canonical JSON (as on the alerts topic), signed.

``X-PromptPulse-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`` with the
timestamp (Unix seconds) in ``X-PromptPulse-Timestamp``: the signature covers the time, so a
receiver that refuses timestamps older than its tolerance refuses replays, and one that keeps
the ``X-PromptPulse-Event-Id`` values seen within the tolerance refuses repeats inside it too
(docs/alerting.md shows the verifier). Every attempt is signed anew with the time it is sent.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-PromptPulse-Signature"
TIMESTAMP_HEADER = "X-PromptPulse-Timestamp"
EVENT_ID_HEADER = "X-PromptPulse-Event-Id"
SIGNATURE_VERSION = "v1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes, event_id: str) -> dict[str, str]:
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_ID_HEADER: event_id,
    }
