"""Signatures for what travels on an SD card, where no TLS or token check protects it.

A bundle (device → office) and a receipts file (office → device) are signed with
HMAC-SHA256 under a key both ends derive from the device's token: the device
holds the token, the office holds its sha256 (how it checks tokens), and the key
is derived from that sha256. So only that device and the office can sign, a
bundle names the device that made it, and a receipt proves the office stored
the item. Each kind of message has its own context string, so a signature made
for one can never pass as the other. The office's database holds what it needs
to sign: guard it as the farm's data (it does not reveal usable tokens).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fieldlog_app.database.canonical import canonical_json

SCHEME = "hmac-sha256:"
BUNDLE = b"fieldlog-bundle-v1\n"
RECEIPT = b"fieldlog-receipt-v1\n"
_KEY_CONTEXT = b"fieldlog card key v1"


class NoSuchSigner(LookupError):
    """No active device of that name, so nothing it signed can be trusted."""


def hash_token(token: str) -> str:
    """What the office stores for a device token (hex sha256)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def key_from_token_hash(token_sha256: str) -> bytes:
    return hmac.new(token_sha256.encode("ascii"), _KEY_CONTEXT, hashlib.sha256).digest()


def key_from_token(token: str) -> bytes:
    """The device's card key, from the token it holds."""
    return key_from_token_hash(hash_token(token))


def sign(key: bytes, context: bytes, obj: Any) -> str:
    """``hmac-sha256:<hex>`` over the context and the canonical JSON of ``obj``."""
    return SCHEME + hmac.new(key, context + canonical_json(obj).encode("utf-8"), hashlib.sha256).hexdigest()


def verify(key: bytes, context: bytes, obj: Any, signature: Any) -> bool:
    """True when ``signature`` is ``sign(key, context, obj)`` (compared in constant time)."""
    if not isinstance(signature, str):
        return False
    try:
        expected = sign(key, context, obj)
    except (TypeError, ValueError):  # not canonical JSON (NaN, a non-string key): nobody signed that
        return False
    return hmac.compare_digest(expected, signature)


def sign_receipt(key: bytes, receipt: dict) -> dict:
    """The receipt with the office's signature (under the device's card key)."""
    unsigned = {k: v for k, v in receipt.items() if k != "signature"}
    return {**unsigned, "signature": sign(key, RECEIPT, unsigned)}


def receipt_is_signed(key: bytes, receipt: dict) -> bool:
    """True when the office signed exactly this receipt for the device holding ``key``."""
    unsigned = {k: v for k, v in receipt.items() if k != "signature"}
    return verify(key, RECEIPT, unsigned, receipt.get("signature"))
