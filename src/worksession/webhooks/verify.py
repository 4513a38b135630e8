"""Verify a worksession webhook: the function docs/webhooks.md shows, verbatim, for a
receiver to copy (standard library only). The service signs with ``signing.sign``."""

import hashlib
import hmac
import time


def verify_worksession_signature(
    raw_body: bytes,
    header: str,
    secret: str,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True if ``header`` (the ``Worksession-Signature`` value) signs ``raw_body`` with
    ``secret`` and its timestamp is within ``tolerance_s`` of now (5 minutes by default).

    ``raw_body`` must be the bytes as received, before any JSON parsing.
    """
    timestamp = None
    signatures = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        # ASCII digits only, and few of them: "²".isdigit() is True, and int() of 400
        # digits would overflow the comparison below.
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value.isascii():
            signatures.append(value.encode())
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    signed = str(timestamp).encode() + b"." + raw_body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
