"""Python twins of hashes the compiled SQL computes (tests check the SQL against them)."""

from __future__ import annotations

import hashlib


def split_bucket(audience: str, profile_id: str) -> int:
    """Same as ``compiler.audiences.split_bucket``: first 6 hex digits of md5, mod 100."""
    digest = hashlib.md5(f"{audience}:{profile_id}".encode(), usedforsecurity=False).hexdigest()
    return int(digest[:6], 16) % 100


def split_for(audience: str, profile_id: str, splits: dict[str, int] | None) -> str | None:
    if not splits:
        return None
    bucket, upper = split_bucket(audience, profile_id), 0
    for name, share in splits.items():
        if share <= 0:
            continue
        upper += share
        if bucket < upper:
            return name
    return None
