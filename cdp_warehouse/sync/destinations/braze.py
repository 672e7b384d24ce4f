"""Braze: ``POST /users/track``, people by ``external_id`` (else email), membership as a
custom attribute, mapped traits as attributes, optional entered/exited events.

Facts (../shared/reference/destinations.md): at most 75 objects per request (newer
workspaces count all arrays together, so we do too); per-object failures come back in an
``errors`` array of ``{type, input_array, index}``; every attribute written is billed, so only
changed attributes are sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cdp_warehouse.specs.models import SyncSpec
from cdp_warehouse.sync.changes import Change, FatalError, RowResult
from cdp_warehouse.sync.destinations.base import Destination, Request, json_value, rejected
from cdp_warehouse.sync.http import HttpClient, RetryPolicy

MAX_OBJECTS = 75
TRACK = "/users/track"
ENTERED, EXITED = "entered_audience", "exited_audience"
# values ``json_value`` returns as they are (exact types: a subclass goes through it)
_PLAIN = frozenset({str, int, float, bool, type(None)})


class Braze(Destination):
    type = "braze"

    @classmethod
    def check(cls, sync: SyncSpec) -> list[tuple[tuple[str, ...], str]]:
        problems = super().check(sync)
        membership = sync.membership
        if membership is not None and membership.tag is not None:
            problems.append((("membership", "tag"), "braze keeps membership in an attribute: "
                                                    "`membership: {attribute: NAME}` (or `{array: NAME}`)"))
        if membership is not None and membership.attribute and membership.array:
            problems.append((("membership",), "give `attribute` (a boolean) or `array` (a list of audiences), not both"))
        if sync.mode == "mirror" and (membership is None or not (membership.attribute or membership.array)) \
                and not sync.events:
            problems.append((("mode",), "mirror removes membership on exit: give `membership: {attribute: NAME}`"))
        for key in ("object", "match", "channel"):
            if getattr(sync, key) is not None:
                problems.append(((key,), f"`{key}` does not apply to braze"))
        return problems

    def connect(self) -> HttpClient:
        base = self.settings.base_url or self.settings.rest_endpoint
        if not base:
            raise FatalError(f"destination {self.context.destination}: no `rest_endpoint`",
                             hint="set rest_endpoint to your Braze REST endpoint, e.g. https://rest.iad-01.braze.com")
        return HttpClient(base, {"Authorization": f"Bearer {self.settings.api_key}"},
                          concurrency=self.settings.concurrency, policy=RetryPolicy(timeout=self.settings.timeout))

    def batch_size(self, total: int) -> int:
        return MAX_OBJECTS // (2 if self.context.sync.events else 1)

    def requests(self, rows: Sequence[Change]) -> list[Request]:
        # Hot path (one call per 75 rows): each object is built in one dict, with what
        # ``Change.values_to_send`` and ``_membership`` give, in the same order.
        attributes: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        sync = self.context.sync
        clear = sync.null_handling == "clear"
        on_entry, on_exit = self._membership_values()
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        for row in rows:
            kind = row.kind
            obj: dict[str, Any] = {"external_id": row.row_key} if row.key_type == "user_id" else {"email": row.row_key}
            written = False
            if kind != "removed":
                changed = row.changed
                for name, value in row.fields.items():
                    if (value is not None or clear) and (kind == "added" or name in changed):
                        obj[name] = value if type(value) in _PLAIN else json_value(value)
                        written = True
            membership = on_entry if kind == "added" else on_exit if kind == "removed" else None
            if membership:
                obj.update(membership)
                written = True
            if written:
                attributes.append(obj)
            if sync.events and kind != "changed":
                who = {"external_id": row.row_key} if row.key_type == "user_id" else {"email": row.row_key}
                name = ENTERED if kind == "added" else EXITED
                events.append({**who, "name": name, "time": now, "properties": {"audience": self.context.audience}})
        body = {key: value for key, value in (("attributes", attributes), ("events", events)) if value}
        return [Request("POST", TRACK, body, tuple(rows))]

    def _membership_values(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``_membership`` of an added and of a removed row (a changed row's is empty)."""
        added = Change("added", "user_id", "", "", None, None)
        return self._membership(added), self._membership(replace(added, kind="removed"))

    def _membership(self, row: Change) -> dict[str, Any]:
        membership = self.context.sync.membership
        if membership is None or row.kind == "changed":
            return {}
        if membership.attribute:
            if row.kind == "removed" and self.context.sync.mode != "mirror":
                return {}
            return {membership.attribute: row.kind == "added"}
        if membership.array:
            if row.kind == "removed" and self.context.sync.mode != "mirror":
                return {}
            return {membership.array: {"add" if row.kind == "added" else "remove": [self.context.audience]}}
        return {}

    def send(self, request: Request) -> list[RowResult]:
        if not request.body:  # nothing to write for these rows (only nulls, skipped)
            return [RowResult(row.row_key, row.key_type, True) for row in request.rows]
        response = self.http.request(request.method, request.url, json=request.body)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code in (401, 403):
            raise FatalError(f"braze answered {response.status_code}: {body.get('message', response.text[:200])}",
                             hint="check the destination's api_key (a REST key with users.track permission)")
        if response.status_code >= 400 and not body.get("errors"):
            raise FatalError(f"braze answered {response.status_code}: {body.get('message', response.text[:200])}")
        return self._results(request, body)

    def _results(self, request: Request, body: dict[str, Any]) -> list[RowResult]:
        """Map ``errors[].index`` of each array back to the rows that produced the objects."""
        if not body.get("errors"):  # the usual answer: every row accepted
            return [RowResult(row.row_key, row.key_type, True) for row in request.rows]
        owners: dict[tuple[str, int], Change] = {}
        by_key = {(row.key_type, row.row_key): row for row in request.rows}
        for array in ("attributes", "events"):
            objects = request.body.get(array, [])
            for index, obj in enumerate(objects):
                key = ("user_id", obj["external_id"]) if "external_id" in obj else ("email", obj["email"])
                owners[(array, index)] = by_key[key]
        failed: dict[tuple[str, str], str] = {}
        for error in body.get("errors") or []:
            row = owners.get((error.get("input_array"), error.get("index")))
            if row is None:  # an error we cannot place fails the whole request
                return rejected(request.rows, f"braze: {error.get('type') or body.get('message')}")
            failed.setdefault((row.key_type, row.row_key), f"braze: {error.get('type')}")
        return [RowResult(row.row_key, row.key_type, (row.key_type, row.row_key) not in failed,
                          failed.get((row.key_type, row.row_key))) for row in request.rows]
