"""Tenant API keys: random, shown once, stored only as a SHA-256 hash.

A key carries 256 bits of randomness, so a fast unsalted hash is enough to make the stored
value useless to a reader while still allowing lookup by an indexed equality.
"""

import hashlib
import secrets

API_KEY_PREFIX = "sk_"


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()
