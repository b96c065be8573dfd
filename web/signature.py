"""Envoy's request signature: Base64(HMAC-SHA256(client secret, raw body)), checked first."""

import base64
import hashlib
import hmac


def expected_signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_is_valid(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time comparison; a missing header or an empty secret never passes."""
    if not header or not secret:
        return False
    return hmac.compare_digest(expected_signature(secret, body).encode(), header.strip().encode())
