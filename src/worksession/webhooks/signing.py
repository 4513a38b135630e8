"""How the service signs a webhook (Stripe's scheme): ``Worksession-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`` with the webhook secret.

Receivers check it with ``verify.verify_worksession_signature`` (docs/webhooks.md)."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Worksession-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value signing ``body`` at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
