"""Intercom (REST API 2.14): contacts found or created by ``external_id`` (else email),
membership as a tag, mapped traits as custom attributes.

Facts (shared/reference/destinations.md, Intercom's OpenAPI description 2.14):

- There is no batch endpoint for contacts: each person is a few calls of their own, so one
  request of the engine carries one row and ``send`` makes that person's calls.
- Search lags behind creation "by a few minutes" (``POST /contacts/search``). We keep the
  contact ids we learn in ``sync_remote_ids`` (``context.remote_ids``) and search only for
  people whose id we do not know; when search misses a contact that exists, ``POST
  /contacts`` answers ``409 conflict`` "A contact matching those details already exists with
  id=…" and we take that id. Either way a person is never created twice.
- Custom attributes must exist as contact data attributes before a contact may carry them;
  we list them once per run and create the missing ones with the type of the trait.
- Rate limits are per 10-second window with ``X-RateLimit-*`` headers and 429s; the shared
  ``HttpClient`` holds every thread of the destination until the window resets.
"""

from __future__ import annotations

import calendar
import re
import threading
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import httpx

from cdp_warehouse.specs.models import SyncSpec
from cdp_warehouse.sync.changes import Change, FatalError, RowResult
from cdp_warehouse.sync.destinations.base import Destination, Request
from cdp_warehouse.sync.http import HttpClient, RetryPolicy

API_VERSION = "2.14"
# "A contact matching those details already exists with id=6762f0dd1bb69f9f2193bb83"
CONFLICT_ID = re.compile(r"\bid=([0-9A-Za-z]+)")
TEXT_COLUMNS = frozenset({"user_id", "email", "split", "profile_id"})  # `fields` sources that are text
SEARCH_PAGE = 5  # an external_id matches one contact; an email a few at most


class RowFailed(Exception):
    """Intercom refused something for this person only: the row goes to sync_rejections."""


class Intercom(Destination):
    type = "intercom"

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self._setup = threading.Lock()  # the tag and the data attributes: once per run
        self._tag_id: str | None = None
        self._attributes: dict[str, str] | None = None  # custom contact attributes: data_type by name
        self._failed_setup: FatalError | None = None

    @classmethod
    def check(cls, sync: SyncSpec) -> list[tuple[tuple[str, ...], str]]:
        problems = super().check(sync)
        membership = sync.membership
        if membership is not None and (membership.attribute or membership.array):
            key = "attribute" if membership.attribute else "array"
            problems.append((("membership", key), "intercom keeps membership as a tag: `membership: {tag: NAME}`"))
        if sync.mode == "mirror" and (membership is None or not membership.tag):
            problems.append((("mode",), "mirror removes the tag on exit: give `membership: {tag: NAME}`"))
        for key in ("object", "match", "channel"):
            if getattr(sync, key) is not None:
                problems.append(((key,), f"`{key}` does not apply to intercom"))
        if sync.events:
            problems.append((("events",), "`events` applies to braze only"))
        return problems

    def connect(self) -> HttpClient:
        # base_url picks the region: https://api.intercom.io, api.eu.intercom.io, api.au.intercom.io
        headers = {"Authorization": f"Bearer {self.settings.access_token}", "Intercom-Version": API_VERSION,
                   "Accept": "application/json"}
        return HttpClient(self.settings.base_url.rstrip("/"), headers, concurrency=self.settings.concurrency,
                          policy=RetryPolicy(timeout=self.settings.timeout))

    def batch_size(self, total: int) -> int:
        return 1  # no batch endpoint: one person per request, `concurrency` people at once

    # ------------------------------------------------------------------ planning (pure)

    def requests(self, rows: Sequence[Change]) -> list[Request]:
        """One request per person; its body is the plan ``send`` carries out (and what
        ``--dry-run`` prints): who, the custom attributes to write, the tag to add or remove."""
        return [self._plan(row) for row in rows]

    def _plan(self, row: Change) -> Request:
        who = {"external_id": row.row_key} if row.key_type == "user_id" else {"email": row.row_key}
        tag = self.context.sync.membership.tag if self.context.sync.membership else None
        if row.kind == "removed":
            # on exit only the membership changes (spec); upsert never gets removals
            return Request("DELETE", "/contacts/{id}/tags/{tag_id}", {"contact": who, "untag": tag}, (row,))
        values = row.values_to_send(self.context.sync.null_handling)
        body: dict[str, Any] = {"contact": who}
        if row.kind == "added" and row.key_type == "user_id" and row.email:
            body["email"] = row.email  # set when the contact is created
        if values:
            body["custom_attributes"] = {name: attribute_value(value) for name, value in values.items()}
        if row.kind == "added" and tag:
            body["tag"] = tag
        if row.kind == "changed" and not values:
            return Request("PUT", "/contacts/{id}", None, (row,))  # only nulls changed, skipped
        return Request("PUT", "/contacts/{id}", body, (row,))

    # ------------------------------------------------------------------ sending

    def send(self, request: Request) -> list[RowResult]:
        row = request.rows[0]
        try:
            if request.body is not None:
                self._deliver(row, request.body)
        except RowFailed as failure:
            return [RowResult(row.row_key, row.key_type, False, str(failure))]
        return [RowResult(row.row_key, row.key_type, True)]

    def _deliver(self, row: Change, plan: dict[str, Any]) -> None:
        if "untag" in plan:
            self._untag(row)  # the tag of this sync (`untag` names it for --dry-run)
            return
        attributes = self._writable(row, plan.get("custom_attributes") or {})
        contact_id, created = self._contact(row, plan, attributes)
        member_tag = self.context.sync.membership.tag if self.context.sync.membership else None
        for _ in range(2):  # once more if the id we held belonged to a contact since deleted
            try:
                if attributes and not created:
                    self._update(contact_id, attributes)
                # a member whose contact had to be (re)created carries the tag again, even on a change
                if plan.get("tag") or (created and member_tag):
                    self._tag(contact_id)
                return
            except _ContactGone:
                contact_id, created = self._contact(row, plan, attributes, stale=contact_id)
        raise RowFailed(f"intercom: contact {contact_id} disappeared while it was being written")

    # ------------------------------------------------------------------ contacts

    def _contact(self, row: Change, plan: dict[str, Any], attributes: dict[str, Any], *,
                 stale: str | None = None) -> tuple[str, bool]:
        """(Intercom id, whether we created it with ``attributes`` already set): our own id
        map first, then search, then create — a conflict on create names the contact."""
        ids = self.context.remote_ids
        known = ids.get(row.key_type, row.row_key)
        if known and known != stale:
            return known, False
        found = self._search(row)
        if found and found != stale:
            ids.put(row.key_type, row.row_key, found)
            return found, False
        body: dict[str, Any] = {"role": "user", **plan["contact"]}
        if plan.get("email"):
            body["email"] = plan["email"]
        if attributes:
            body["custom_attributes"] = attributes
        response = self._call("POST", "/contacts", body)
        if response.status_code == 200:
            ids.put(row.key_type, row.row_key, response.json()["id"])
            return response.json()["id"], True
        code, message = _error(response)
        match = CONFLICT_ID.search(message)
        if response.status_code == 409 and match:
            if "archived" in message.lower():
                raise RowFailed(f"intercom: an archived contact matches ({message}); unarchive it in Intercom to sync it")
            ids.put(row.key_type, row.row_key, match.group(1))
            return match.group(1), False
        raise RowFailed(f"intercom {response.status_code} {code}: {message}")

    def _search(self, row: Change) -> str | None:
        """The contact search finds for this person now (it may miss a new one)."""
        if row.key_type == "user_id":
            query: dict[str, Any] = {"field": "external_id", "operator": "=", "value": row.row_key}
        else:  # people without a user id: the user with that email
            query = {"operator": "AND", "value": [{"field": "email", "operator": "=", "value": row.row_key},
                                                  {"field": "role", "operator": "=", "value": "user"}]}
        response = self._call("POST", "/contacts/search", {"query": query, "pagination": {"per_page": SEARCH_PAGE}})
        if response.status_code != 200:
            code, message = _error(response)
            raise RowFailed(f"intercom {response.status_code} {code}: {message}")
        contacts = response.json().get("data") or []
        if row.key_type == "user_id":
            contacts = [c for c in contacts if c.get("external_id") == row.row_key]
        else:  # an email-only profile is most likely the user Intercom has without an external id
            contacts.sort(key=lambda c: c.get("external_id") is not None)
        return contacts[0]["id"] if contacts else None

    def _update(self, contact_id: str, attributes: dict[str, Any]) -> None:
        response = self._call("PUT", f"/contacts/{contact_id}", {"custom_attributes": attributes})
        self._expect_ok(response)

    # ------------------------------------------------------------------ tags

    def _tag(self, contact_id: str) -> None:
        response = self._call("POST", f"/contacts/{contact_id}/tags", {"id": self._tag_for_run()})
        self._expect_ok(response)

    def _untag(self, row: Change) -> None:
        """Remove our tag; a person Intercom does not have, or who no longer carries the tag,
        is already where mirror wants them."""
        ids = self.context.remote_ids
        contact_id = ids.get(row.key_type, row.row_key) or self._search(row)
        tried: set[str] = set()
        while contact_id and contact_id not in tried:
            tried.add(contact_id)
            response = self._call("DELETE", f"/contacts/{contact_id}/tags/{self._tag_for_run()}")
            try:
                self._expect_ok(response)
                return
            except _ContactGone:
                contact_id = self._search(row)  # merged or recreated under another id?
                if contact_id:
                    ids.put(row.key_type, row.row_key, contact_id)
            except RowFailed:
                if response.status_code == 404:
                    return  # the tag is not on the contact (removed by hand): done
                raise

    def _tag_for_run(self) -> str:
        """The tag's id: ``POST /tags`` finds or creates a tag by name, once per run."""
        with self._setup:
            self._raise_failed_setup()
            if self._tag_id is None:
                name = self.context.sync.membership.tag
                response = self._call("POST", "/tags", {"name": name})
                if response.status_code != 200:
                    code, message = _error(response)
                    self._failed_setup = FatalError(f"intercom refused the tag {name!r}: {response.status_code} "
                                                    f"{code}: {message}", hint="check `membership: {tag: ...}`")
                    raise self._failed_setup
                self._tag_id = str(response.json()["id"])
            return self._tag_id

    # ------------------------------------------------------------------ data attributes

    def _writable(self, row: Change, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` ready for ``custom_attributes``: missing data attributes created first
        with the trait's type; a null for an attribute that does not exist has nothing to
        clear and is left out; values fitted to the type an existing attribute has."""
        if not values:
            return {}
        wanted = {name: data_type(self.context.sync.fields.get(name, ""), row.fields.get(name))
                  for name in values}
        existing = self._ensure_attributes({n: t for n, t in wanted.items() if t is not None})
        return {name: fit(value, existing[name]) for name, value in values.items() if name in existing}

    def _ensure_attributes(self, wanted: dict[str, str]) -> dict[str, str]:
        with self._setup:
            self._raise_failed_setup()
            if self._attributes is None:
                self._attributes = self._list_attributes()
            for name, kind in wanted.items():
                if name not in self._attributes:
                    self._create_attribute(name, kind)
            return dict(self._attributes)

    def _list_attributes(self) -> dict[str, str]:
        response = self._call("GET", "/data_attributes", params={"model": "contact"})
        if response.status_code != 200:
            code, message = _error(response)
            raise FatalError(f"intercom could not list data attributes: {response.status_code} {code}: {message}")
        return {a["name"]: a.get("data_type", "string") for a in response.json().get("data") or []
                if a.get("custom") and not a.get("archived")}

    def _create_attribute(self, name: str, kind: str) -> None:
        body = {"name": name, "model": "contact", "data_type": kind, "description": "Synced by cdp_warehouse"}
        response = self._call("POST", "/data_attributes", body)
        if response.status_code == 200:
            self._attributes[name] = kind  # type: ignore[index]
            return
        # Another sync (another audience, in parallel) may have just created it.
        self._attributes = self._list_attributes()
        if name not in self._attributes:
            code, message = _error(response)
            self._failed_setup = FatalError(
                f"intercom refused to create the data attribute {name!r} ({kind}): {response.status_code} {code}: "
                f"{message}", hint="rename it in the sync's `fields:` (standard attributes such as email cannot be "
                                   "custom ones)")
            raise self._failed_setup

    def _raise_failed_setup(self) -> None:
        if self._failed_setup is not None:
            raise self._failed_setup

    # ------------------------------------------------------------------ HTTP

    def _call(self, method: str, url: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, url, json=body, **kwargs) if body is not None \
            else self.http.request(method, url, **kwargs)
        if response.status_code in (401, 403):
            code, message = _error(response)
            raise FatalError(f"intercom answered {response.status_code} {code}: {message}",
                             hint="check the destination's access_token (an Intercom access token with "
                                  "read and write access to users, tags and data attributes)")
        return response

    @staticmethod
    def _expect_ok(response: httpx.Response) -> None:
        if response.status_code == 200:
            return
        code, message = _error(response)
        if response.status_code == 404 and "user not found" in message.lower():
            raise _ContactGone(message)
        raise RowFailed(f"intercom {response.status_code} {code}: {message}")


class _ContactGone(Exception):
    """The contact id we held is no longer a contact (deleted or merged in Intercom)."""


def _error(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` of Intercom's ``{"type": "error.list", "errors": [...]}``."""
    try:
        errors = response.json().get("errors") or [{}]
        return str(errors[0].get("code") or ""), str(errors[0].get("message") or "")
    except (ValueError, AttributeError):
        return "", response.text[:200]


# ---------------------------------------------------------------------- attribute types

def data_type(source: str, value: Any) -> str | None:
    """The Intercom data type for a field (spec: count → integer, numeric aggregates →
    float, text → string, boolean → boolean, timestamps → datetime). The destination sees
    values, not trait specs: the warehouse's types show in them (a count is an int, a sum a
    float, a first_seen a datetime). ``None`` when a null says nothing yet."""
    if source == "in_audience":
        return "boolean"
    if source in TEXT_COLUMNS:
        return "string"
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, Decimal):  # the column's scale shows in every value of it
        return "integer" if value.as_tuple().exponent >= 0 else "float"  # type: ignore[operator]
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime | date):
        return "datetime"
    return "string"  # text, and `unique` lists (sent joined)


def attribute_value(value: Any) -> Any:
    """A warehouse value as Intercom stores it: datetime attributes take unix seconds
    (naive timestamps are UTC); lists (``unique``) become text, Intercom has no list values."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value.as_tuple().exponent >= 0 else float(value)  # type: ignore[operator]
    if isinstance(value, datetime):
        return int(value.timestamp()) if value.tzinfo else calendar.timegm(value.timetuple())
    if isinstance(value, date):
        return calendar.timegm(value.timetuple())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def fit(value: Any, kind: str) -> Any:
    """Fit a value to an attribute that already exists with type ``kind`` where nothing is
    lost (a number into a text attribute, a whole float into an integer one); anything else
    is sent as it is and Intercom decides (a refusal lands in sync_rejections)."""
    if value is None or isinstance(value, bool):
        return value
    if kind == "string" and isinstance(value, int | float):
        return str(value)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
