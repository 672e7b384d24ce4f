"""Destination types by the ``type`` of their cdp.yaml entry, and their settings with the
environment filled in (only when a command talks to them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cdp_warehouse.errors import CdpError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.specs.envvars import MissingEnvVar, interpolate
from cdp_warehouse.sync.destinations.base import Destination
from cdp_warehouse.sync.destinations.braze import Braze
from cdp_warehouse.sync.destinations.intercom import Intercom
from cdp_warehouse.sync.destinations.salesforce import Salesforce
from cdp_warehouse.sync.destinations.slack import Slack

DESTINATIONS: dict[str, type[Destination]] = {cls.type: cls for cls in (Braze, Intercom, Salesforce, Slack)}


def settings(project: ResolvedProject, name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The destination ``name`` of cdp.yaml with its ``${VARS}`` filled in."""
    spec = project.config.destinations[name]
    environ = os.environ if environ is None else environ
    try:
        values = {key: interpolate(value, environ) for key, value in spec.model_dump().items()}
    except MissingEnvVar as error:
        raise CdpError(f"destination {name}: environment variable {error.name} is not set",
                       hint=f"export {error.name}=... (credentials are read only from the environment)") from None
    return type(spec).model_validate(values)


def destination_type(project: ResolvedProject, name: str) -> type[Destination]:
    kind = project.config.destinations[name].type
    if kind not in DESTINATIONS:
        raise CdpError(f"destination {name}: syncing to {kind} is not available in this version",
                       hint=f"available: {', '.join(sorted(DESTINATIONS))}")
    return DESTINATIONS[kind]
