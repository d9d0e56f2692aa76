"""Pseudonyms for secondary-use exports: a keyed hash per recipient, so one recipient can link its own
extracts (the same person always has the same pseudonym for it) but two recipients cannot link theirs."""

from __future__ import annotations

import base64
import hashlib
import hmac


class Pseudonymiser:
    """HMAC-SHA256 keyed by a per-recipient key derived from the platform's secret."""

    def __init__(self, secret: bytes, recipient: str) -> None:
        if len(secret) < 32:
            raise ValueError("the pseudonymisation secret must be at least 32 bytes")
        self._key = hmac.new(secret, f"recipient:{recipient}".encode(), hashlib.sha256).digest()

    def pseudonym(self, identifier: str) -> str:
        """A stable, URL-safe 26-character pseudonym (130 bits) for an NHS number or person id."""
        digest = hmac.new(self._key, identifier.encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode().rstrip("=").lower()[:26]
