"""Asset keys: one place decides how the UI names things."""

from __future__ import annotations

import dagster as dg

RAW_EVENTS = dg.AssetKey(["raw", "events"])
IDENTITY = dg.AssetKey(["cdp", "identity_map"])
PROFILES = dg.AssetKey(["cdp", "profiles"])
PROFILE_TRAITS = dg.AssetKey(["cdp", "profile_traits"])


def audience_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["audience", name])


def sync_key(audience: str, destination: str) -> dg.AssetKey:
    return dg.AssetKey(["sync", audience, destination])


def destination_resource(destination: str) -> str:
    return f"destination_{destination}"
