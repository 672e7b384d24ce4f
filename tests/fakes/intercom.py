"""A stateful fake of Intercom's REST API 2.14 — contacts, tags, data attributes — over real HTTP.

Every request and every answer is checked against Intercom's official OpenAPI description
(``intercom_openapi.py``): a request off the description is answered ``400 parameter_invalid``
and an answer of ours off it becomes a ``500``; both are kept in ``violations`` so tests can
assert there were none.

What it keeps and enforces (/work/shared/reference/destinations.md, Intercom section):

- **Auth**: ``Authorization: Bearer <token>``; else ``401 {"type": "error.list", "errors":
  [{"code": "unauthorized", "message": "Access Token Invalid"}]}``, without rate-limit headers
  (Intercom sends them only to authenticated requests). ``Intercom-Version`` must say 2.14,
  the only version whose description the fake follows.
- **Rate limit**: ``rate_limit`` requests per ``window_seconds`` window, windows aligned on
  the clock like Intercom's (``X-RateLimit-Reset`` 1487332510 → 1487332520); every
  authenticated answer carries ``X-RateLimit-Limit/-Remaining/-Reset``; over it, ``429
  rate_limit_exceeded`` "Exceeded rate limit of N in 10_seconds".
- **Contacts**: ``POST /contacts`` (``role`` user|lead, default user), ``PUT`` / ``GET
  /contacts/{id}``, ``POST /contacts/search``. A duplicate ``external_id`` — or, without one,
  the email of an existing user — answers ``409 conflict`` "A contact matching those details
  already exists with id=…" (what Intercom answers; "An archived contact …" for an archived
  one). Unknown ids answer ``404 not_found`` "User Not Found".
- **Search lag**: a contact created over the API becomes searchable only ``search_delay``
  seconds after its creation *and* after ``search_misses`` searches that should have found it
  (Intercom: "this delay can take a few minutes").
- **Custom attributes** must exist as contact data attributes and hold values of their type
  (integer, float — integers too —, boolean, string, date/datetime as unix seconds; null
  clears); else ``400 parameter_invalid``.
- **Tags**: ``POST /tags`` creates or finds a tag by name (case-insensitive); ``POST
  /contacts/{id}/tags`` tags (idempotent), ``DELETE /contacts/{id}/tags/{tag_id}`` untags
  (``404`` when the contact does not carry the tag: an assumption, the description does not
  say).
- **Data attributes**: ``GET /data_attributes?model=contact`` lists the standard attributes
  and the custom ones; ``POST /data_attributes`` creates one (``400`` for a taken or invalid
  name). The description's answer schema knows no ``datetime`` type: an attribute created as
  ``datetime`` is listed as ``date`` (Intercom's date attributes hold unix timestamps).

Example::

    with FakeIntercom(search_misses=1) as intercom:
        ...sync...
        assert intercom.tag_names(external_id="u1") == {"Churn Risk"}
        assert intercom.violations == []
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from .intercom_openapi import Checker
from .server import Body, FakeServer, RecordedRequest, Response

API_VERSION = "2.14"
DEFAULT_TOKEN = "test-intercom-token"
# Intercom's default: 10,000 calls per minute per app, enforced in 10-second windows.
DEFAULT_RATE_LIMIT = 1666
WINDOW_SECONDS = 10.0
WORKSPACE_ID = "fakeintercomworkspace"
ADMIN_ID = "991267001"
MAX_TAGS_SHOWN = 10  # a contact's `tags.data` shows at most 10; the url lists them all
DATA_TYPES = ("string", "integer", "float", "boolean", "datetime", "date")
# Standard contact attributes GET /data_attributes lists; their names cannot be taken by a
# custom attribute.
STANDARD_ATTRIBUTES = {
    "name": "string", "email": "string", "phone": "string", "external_id": "string", "role": "string",
    "owner_id": "integer", "created_at": "date", "updated_at": "date", "signed_up_at": "date",
    "last_seen_at": "date", "unsubscribed_from_emails": "boolean",
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ATTRIBUTE_NAME = re.compile(r"^[\w \-$€£¥]+$")  # "alphanumeric characters, currency symbols, and hyphens"


@dataclass
class IntercomContact:
    """One contact as the fake keeps it (``tags`` are tag ids, in the order applied)."""

    id: str
    role: str
    external_id: str | None = None
    email: str | None = None
    custom_attributes: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    created_at: int = 0
    updated_at: int = 0
    archived: bool = False
    searchable_at: float = 0.0  # monotonic instant from which search may find it
    misses_left: int = 0  # searches that must still miss it


@dataclass(frozen=True)
class _Rejection:
    predicate: Callable[[IntercomContact], bool]
    message: str


class FakeIntercom(FakeServer):
    """Intercom contacts, tags and data attributes for one workspace.

    Args:
        token: The access token accepted as ``Authorization: Bearer <token>``.
        rate_limit: Requests per window (``None``: Intercom's default, 1,666 per 10 s).
        window_seconds: Length of a rate-limit window.
        search_delay: Seconds after creation before search finds a contact.
        search_misses: Searches that miss a newly created contact before it is found.
        validate: Check requests and answers against the OpenAPI description (benchmarks may
            turn it off to measure the client, not the validator).
    """

    def __init__(self, token: str = DEFAULT_TOKEN, rate_limit: int | None = None,
                 window_seconds: float = WINDOW_SECONDS, *, search_delay: float = 0.0, search_misses: int = 0,
                 validate: bool = True) -> None:
        super().__init__()
        self.token = token
        self.rate_limit = rate_limit if rate_limit is not None else DEFAULT_RATE_LIMIT
        self.window_seconds = window_seconds
        self.search_delay = search_delay
        self.search_misses = search_misses
        self._checker = Checker() if validate else None
        self._contacts: dict[str, IntercomContact] = {}
        self._tags: dict[str, str] = {}  # id -> name
        self._attributes: dict[str, dict[str, Any]] = {}  # custom contact data attributes by name
        self._rejections: list[_Rejection] = []
        self._violations: list[str] = []
        self._ids = itertools.count(1)
        self._window_end = 0.0
        self._window_count = 0

    # --------------------------------------------------------------------------- inspection
    @property
    def contacts(self) -> list[IntercomContact]:
        """Every contact (copies), in creation order; archived ones included."""
        with self._lock:
            return copy.deepcopy(list(self._contacts.values()))

    @property
    def violations(self) -> list[str]:
        """Requests and answers that broke the OpenAPI description, as ``METHOD path: why``."""
        with self._lock:
            return list(self._violations)

    @property
    def throttled(self) -> int:
        return sum(1 for r in self.requests if r.status == 429)

    @property
    def tags(self) -> dict[str, str]:
        """Tag names by id."""
        with self._lock:
            return dict(self._tags)

    @property
    def data_attributes(self) -> dict[str, str]:
        """Custom contact data attributes: data type (as created) by name."""
        with self._lock:
            return {name: a["data_type"] for name, a in self._attributes.items()}

    def contact(self, *, external_id: str | None = None, email: str | None = None,
                id: str | None = None) -> IntercomContact | None:
        """The live contact with this id, external_id, or (only) email; ``None`` if none."""
        with self._lock:
            return copy.deepcopy(self._find(external_id=external_id, email=email, id=id))

    def find_all(self, *, external_id: str | None = None, email: str | None = None) -> list[IntercomContact]:
        """Every live contact with this external_id or email (duplicates show up here)."""
        with self._lock:
            return copy.deepcopy([c for c in self._contacts.values() if not c.archived and (
                (external_id is not None and c.external_id == external_id)
                or (email is not None and (c.email or "").lower() == email.lower()))])

    def tag_names(self, **who: str) -> set[str]:
        """Names of the tags on one contact (``external_id=``, ``email=`` or ``id=``)."""
        found = self.contact(**who)
        return {self._tags[t] for t in found.tags} if found else set()

    def tagged(self, name: str) -> set[str]:
        """external_id (else email) of the live contacts carrying tag ``name``."""
        with self._lock:
            ids = {i for i, n in self._tags.items() if n.lower() == name.lower()}
            return {c.external_id or c.email or c.id for c in self._contacts.values()
                    if not c.archived and ids & set(c.tags)}

    # --------------------------------------------------------------------------- test control
    def add_contact(self, *, external_id: str | None = None, email: str | None = None, role: str = "user",
                    custom_attributes: dict[str, Any] | None = None, searchable: bool = True) -> str:
        """A contact someone else made (the Messenger, a teammate); returns its id."""
        with self._lock:
            contact = self._new_contact(role, external_id, email)
            contact.custom_attributes.update(custom_attributes or {})
            if searchable:
                contact.searchable_at, contact.misses_left = 0.0, 0
            return contact.id

    def add_data_attribute(self, name: str, data_type: str) -> None:
        with self._lock:
            self._add_attribute(name, data_type)

    def untag_by_hand(self, contact_id: str, tag_name: str) -> None:
        """A teammate removes a tag in Intercom's inbox."""
        with self._lock:
            contact = self._contacts[contact_id]
            contact.tags = [t for t in contact.tags if self._tags[t].lower() != tag_name.lower()]

    def delete_contact(self, contact_id: str) -> None:
        with self._lock:
            del self._contacts[contact_id]

    def archive(self, contact_id: str) -> None:
        with self._lock:
            self._contacts[contact_id].archived = True

    def settle(self) -> None:
        """Search catches up: every contact becomes searchable now."""
        with self._lock:
            for contact in self._contacts.values():
                contact.searchable_at, contact.misses_left = 0.0, 0

    def reject(self, predicate: Callable[[IntercomContact], bool], message: str = "Email is invalid") -> None:
        """Refuse creates and updates whose resulting contact matches, with ``400
        parameter_invalid`` (a per-contact error), until ``clear_rejections``."""
        with self._lock:
            self._rejections.append(_Rejection(predicate, message))

    def clear_rejections(self) -> None:
        with self._lock:
            self._rejections.clear()

    # --------------------------------------------------------------------------- HTTP
    def fault_body(self, status: int) -> Body:
        if status == 429:
            return _error("rate_limit_exceeded", f"Exceeded rate limit of {self.rate_limit} in {self.window_seconds:g}_seconds")
        if status == 401:
            return _error("unauthorized", "Access Token Invalid")
        if status == 403:
            return _error("api_plan_restricted", "Active subscription needed.")
        if status >= 500:
            return _error("server_error", "Server Error")
        return _error("client_error", str(super().fault_body(status)))

    def finalize(self, request: RecordedRequest, response: Response) -> None:
        if self._authorized(request):
            with self._lock:
                self._roll_window()
                remaining = 0 if response.status == 429 else max(self.rate_limit - self._window_count, 0)
                response.headers.update({
                    "X-RateLimit-Limit": str(self.rate_limit),
                    "X-RateLimit-Remaining": str(remaining),
                    "X-RateLimit-Reset": str(math.ceil(self._window_end)),
                })
        injected = request.fault is not None and request.fault.status is not None
        if self._checker is not None and not injected:  # an injected answer is the test's own
            problem = self._checker.response_problem(request.method, request.path, _query(request),
                                                     request.headers, request.raw, response.status, response.body)
            if problem:
                self._violate(request, f"answer {response.status}: {problem}")
                response.status, response.body = 500, _error("server_error", f"fake answer off the description: {problem}")

    def handle(self, request: RecordedRequest) -> Response:
        if not self._authorized(request):
            return Response(401, _error("unauthorized", "Access Token Invalid"))
        version = request.headers.get("intercom-version")
        if version != API_VERSION:
            return Response(400, _error("intercom_version_invalid",
                                        f"Intercom-Version {version!r}: this fake speaks {API_VERSION} only"))
        if not self._take_rate_slot():
            return Response(429, self.fault_body(429))
        if self._checker is not None:
            problem = self._checker.request_problem(request.method, request.path, _query(request),
                                                    request.headers, request.raw)
            if problem:
                status, why = problem
                self._violate(request, why)
                return Response(status, _error("not_found" if status == 404 else "parameter_invalid", why))
        route = self._route(request)
        if route is None:
            raise NotImplementedError(f"the fake does not implement {request.method} {request.path}")
        handler, args = route
        with self._lock:
            return handler(request.body if isinstance(request.body, dict) else {}, _query(request), *args)

    # --------------------------------------------------------------------------- routing
    def _route(self, request: RecordedRequest) -> tuple[Callable[..., Response], tuple[str, ...]] | None:
        """The handler for an operation the fake implements, and the path's ids."""
        routes: list[tuple[str, str, Callable[..., Response]]] = [
            ("POST", r"/contacts", self._create_contact),
            ("POST", r"/contacts/search", self._search),
            ("GET", r"/contacts/([^/]+)", self._get_contact),
            ("PUT", r"/contacts/([^/]+)", self._update_contact),
            ("POST", r"/contacts/([^/]+)/tags", self._tag_contact),
            ("GET", r"/contacts/([^/]+)/tags", self._contact_tags),
            ("DELETE", r"/contacts/([^/]+)/tags/([^/]+)", self._untag_contact),
            ("POST", r"/tags", self._create_tag),
            ("GET", r"/tags", self._list_tags),
            ("GET", r"/data_attributes", self._list_attributes),
            ("POST", r"/data_attributes", self._create_attribute),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, request.path.rstrip("/"))
            if method == request.method and match:
                return handler, tuple(unquote(g) for g in match.groups())
        return None

    # --------------------------------------------------------------------------- contacts
    def _create_contact(self, body: dict[str, Any], query: dict[str, str]) -> Response:
        role = body.get("role") or "user"
        if role not in ("user", "lead"):
            return Response(400, _error("parameter_invalid", f"Role {role!r} is invalid: user or lead"))
        external_id, email = body.get("external_id"), body.get("email")
        existing = self._conflict(role, external_id, email)
        if existing is not None:
            kind = "An archived contact" if existing.archived else "A contact"
            return Response(409, _error("conflict", f"{kind} matching those details already exists with id={existing.id}"))
        draft = IntercomContact(id="", role=role, external_id=external_id, email=email)
        problem = self._contact_problem(draft, body.get("custom_attributes"))
        if problem:
            return Response(400, _error("parameter_invalid", problem))
        contact = self._new_contact(role, external_id, email)
        contact.custom_attributes.update(_without_nulls(body.get("custom_attributes")))
        return Response(200, self._contact_json(contact, push=True))

    def _update_contact(self, body: dict[str, Any], query: dict[str, str], contact_id: str) -> Response:
        contact = self._live(contact_id)
        if contact is None:
            return Response(404, _error("not_found", "User Not Found"))
        draft = copy.deepcopy(contact)
        for key in ("role", "external_id", "email"):
            if key in body:
                setattr(draft, key, body[key])
        problem = self._contact_problem(draft, body.get("custom_attributes"))
        if problem:
            return Response(400, _error("parameter_invalid", problem))
        for key in ("role", "external_id", "email"):
            setattr(contact, key, getattr(draft, key))
        for name, value in (body.get("custom_attributes") or {}).items():
            if value is None:
                contact.custom_attributes.pop(name, None)  # null clears the attribute
            else:
                contact.custom_attributes[name] = value
        contact.updated_at = int(time.time())
        return Response(200, self._contact_json(contact, push=True))

    def _get_contact(self, body: dict[str, Any], query: dict[str, str], contact_id: str) -> Response:
        contact = self._live(contact_id)
        if contact is None:
            return Response(404, _error("not_found", "User Not Found"))
        return Response(200, self._contact_json(contact, push=True))

    def _search(self, body: dict[str, Any], query: dict[str, str]) -> Response:
        pagination = body.get("pagination") or {}
        if pagination.get("starting_after"):
            raise NotImplementedError("the fake returns one page of search results")
        per_page = pagination.get("per_page") or 50
        now = time.monotonic()
        found = []
        for contact in self._contacts.values():
            if contact.archived or not _matches(contact, body["query"]):
                continue
            if now < contact.searchable_at or contact.misses_left > 0:
                contact.misses_left = max(0, contact.misses_left - 1)  # this search missed it
                continue
            found.append(contact)
        shown = found[:per_page]
        return Response(200, {
            "type": "list", "data": [self._contact_json(c) for c in shown], "total_count": len(found),
            "pages": {"type": "pages", "page": 1, "per_page": per_page,
                      "total_pages": max(1, math.ceil(len(found) / per_page))},
        })

    def _conflict(self, role: str, external_id: str | None, email: str | None) -> IntercomContact | None:
        """The contact a create would duplicate: same external_id; without one, a user with
        the same email."""
        for contact in self._contacts.values():
            if external_id is not None and contact.external_id == external_id:
                return contact
            if (external_id is None and role == "user" and email and contact.role == "user"
                    and (contact.email or "").lower() == email.lower()):
                return contact
        return None

    def _contact_problem(self, draft: IntercomContact, attributes: Any) -> str | None:
        if draft.email and not _EMAIL.match(draft.email):
            return "Email is invalid"
        for name, value in (attributes or {}).items():
            spec = self._attributes.get(name)
            if spec is None or spec["archived"]:
                return f"Custom attribute '{name}' does not exist"
            if value is not None and not _fits(spec["data_type"], value):
                return f"Custom attribute '{name}' should be of type {spec['data_type']}, got {value!r}"
        after = copy.deepcopy(draft)
        after.custom_attributes.update(_without_nulls(attributes))
        for rejection in self._rejections:
            if rejection.predicate(after):
                return rejection.message
        return None

    def _new_contact(self, role: str, external_id: str | None, email: str | None) -> IntercomContact:
        now = int(time.time())
        contact = IntercomContact(id=uuid.uuid4().hex[:24], role=role, external_id=external_id, email=email,
                                  created_at=now, updated_at=now,
                                  searchable_at=time.monotonic() + self.search_delay, misses_left=self.search_misses)
        self._contacts[contact.id] = contact
        return contact

    def _live(self, contact_id: str) -> IntercomContact | None:
        contact = self._contacts.get(contact_id)
        return contact if contact is not None and not contact.archived else None

    def _find(self, *, external_id: str | None, email: str | None, id: str | None) -> IntercomContact | None:
        if id is not None:
            return self._live(id)
        for contact in self._contacts.values():
            if contact.archived:
                continue
            if external_id is not None and contact.external_id == external_id:
                return contact
            if external_id is None and email is not None and (contact.email or "").lower() == email.lower():
                return contact
        return None

    def _contact_json(self, c: IntercomContact, *, push: bool = False) -> dict[str, Any]:
        """The contact object of the description (``contact`` schema; single-contact answers
        add ``enabled_push_messaging``)."""
        shown = c.tags[:MAX_TAGS_SHOWN]
        out: dict[str, Any] = {
            "type": "contact", "id": c.id, "workspace_id": WORKSPACE_ID, "external_id": c.external_id,
            "role": c.role, "email": c.email or "", "phone": None, "name": None, "avatar": None,
            "owner_id": None, "social_profiles": {"type": "list", "data": []}, "has_hard_bounced": False,
            "marked_email_as_spam": False, "unsubscribed_from_emails": False,
            "created_at": c.created_at, "updated_at": c.updated_at, "signed_up_at": None, "last_seen_at": None,
            "last_replied_at": None, "last_contacted_at": None, "last_email_opened_at": None,
            "last_email_clicked_at": None, "language_override": None, "browser": None,
            "location": {"type": "location", "country": None, "region": None, "city": None},
            "custom_attributes": copy.deepcopy(c.custom_attributes),
            "tags": {"type": "list", "data": [{"type": "tag", "id": t, "url": f"/tags/{t}"} for t in shown],
                     "url": f"/contacts/{c.id}/tags", "total_count": len(c.tags), "has_more": len(c.tags) > len(shown)},
        }
        if c.email:
            out["email_domain"] = c.email.rsplit("@", 1)[-1]
        if push:
            out["enabled_push_messaging"] = None
        return out

    # --------------------------------------------------------------------------- tags
    def _create_tag(self, body: dict[str, Any], query: dict[str, str]) -> Response:
        if any(key in body for key in ("companies", "users")):
            raise NotImplementedError("the fake does not tag companies or users through POST /tags")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return Response(400, _error("parameter_invalid", "invalid tag parameters"))
        if body.get("id") is not None:  # rename
            if body["id"] not in self._tags:
                return Response(404, _error("not_found", "Resource Not Found"))
            self._tags[body["id"]] = name
            return Response(200, {"type": "tag", "id": body["id"], "name": name})
        tag_id = next((i for i, n in self._tags.items() if n.lower() == name.lower()), None)
        if tag_id is None:
            tag_id = str(100 + next(self._ids))
            self._tags[tag_id] = name
        return Response(200, {"type": "tag", "id": tag_id, "name": self._tags[tag_id]})

    def _list_tags(self, body: dict[str, Any], query: dict[str, str]) -> Response:
        return Response(200, {"type": "list", "data": [{"type": "tag", "id": i, "name": n} for i, n in self._tags.items()]})

    def _tag_contact(self, body: dict[str, Any], query: dict[str, str], contact_id: str) -> Response:
        contact = self._live(contact_id)
        if contact is None:
            return Response(404, _error("not_found", "User Not Found"))
        tag_id = str(body.get("id"))
        if tag_id not in self._tags:
            return Response(404, _error("not_found", "Resource Not Found"))
        if tag_id not in contact.tags:
            contact.tags.append(tag_id)
        return Response(200, self._applied(tag_id))

    def _untag_contact(self, body: dict[str, Any], query: dict[str, str], contact_id: str, tag_id: str) -> Response:
        contact = self._live(contact_id)
        if contact is None:
            return Response(404, _error("not_found", "User Not Found"))
        if tag_id not in self._tags or tag_id not in contact.tags:
            return Response(404, _error("not_found", "Resource Not Found"))
        contact.tags.remove(tag_id)
        return Response(200, self._applied(tag_id))

    def _contact_tags(self, body: dict[str, Any], query: dict[str, str], contact_id: str) -> Response:
        contact = self._live(contact_id)
        if contact is None:
            return Response(404, _error("not_found", "User Not Found"))
        return Response(200, {"type": "list", "data": [self._applied(t) for t in contact.tags]})

    def _applied(self, tag_id: str) -> dict[str, Any]:
        return {"type": "tag", "id": tag_id, "name": self._tags[tag_id], "applied_at": int(time.time()),
                "applied_by": {"type": "admin", "id": ADMIN_ID}}

    # --------------------------------------------------------------------------- data attributes
    def _list_attributes(self, body: dict[str, Any], query: dict[str, str]) -> Response:
        if query.get("model", "contact") != "contact":
            raise NotImplementedError("the fake keeps contact data attributes only")
        archived = query.get("include_archived") == "true"
        standard = [{"type": "data_attribute", "name": n, "full_name": n, "label": n, "data_type": t,
                     "api_writable": True, "ui_writable": False, "messenger_writable": False, "custom": False,
                     "archived": False, "model": "contact"} for n, t in STANDARD_ATTRIBUTES.items()]
        custom = [_attribute_json(a) for a in self._attributes.values() if archived or not a["archived"]]
        return Response(200, {"type": "list", "data": standard + custom})

    def _create_attribute(self, body: dict[str, Any], query: dict[str, str]) -> Response:
        name, model, data_type = body.get("name"), body.get("model"), body.get("data_type")
        if model != "contact":
            raise NotImplementedError("the fake keeps contact data attributes only")
        if data_type not in DATA_TYPES:
            raise NotImplementedError(f"the fake does not create {data_type!r} (list) attributes")
        if name in self._attributes or name in STANDARD_ATTRIBUTES:
            return Response(400, _error("parameter_invalid", f"You already have '{name}' in your people data. "
                                                             "To save this as new people data, use a different name."))
        if not _ATTRIBUTE_NAME.match(name or ""):
            return Response(400, _error("parameter_invalid", "Your name for this attribute must only contain "
                                                             "alphanumeric characters, currency symbols, and hyphens"))
        attribute = self._add_attribute(name, data_type, body.get("description"))
        return Response(200, _attribute_json(attribute))

    def _add_attribute(self, name: str, data_type: str, description: str | None = None) -> dict[str, Any]:
        now = int(time.time())
        attribute = {"id": next(self._ids), "name": name, "data_type": data_type, "description": description or "",
                     "archived": False, "created_at": now}
        self._attributes[name] = attribute
        return attribute

    # --------------------------------------------------------------------------- plumbing
    def _authorized(self, request: RecordedRequest) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def _roll_window(self) -> None:
        now = time.time()
        if now >= self._window_end:
            self._window_end = (math.floor(now / self.window_seconds) + 1) * self.window_seconds
            self._window_count = 0

    def _take_rate_slot(self) -> bool:
        with self._lock:
            self._roll_window()
            self._window_count += 1
            return self._window_count <= self.rate_limit

    def _violate(self, request: RecordedRequest, problem: str) -> None:
        with self._lock:
            self._violations.append(f"{request.method} {request.path}: {problem}")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error.list", "request_id": str(uuid.uuid4()), "errors": [{"code": code, "message": message}]}


def _query(request: RecordedRequest) -> dict[str, str]:
    return dict(parse_qsl(request.query))


def _without_nulls(attributes: Any) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in (attributes or {}).items() if v is not None}


def _fits(data_type: str, value: Any) -> bool:
    """Whether Intercom would store ``value`` in an attribute of ``data_type``."""
    if data_type == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if data_type == "integer":
        return isinstance(value, int)
    if data_type == "float":
        return isinstance(value, int | float)
    if data_type in ("date", "datetime"):
        return isinstance(value, int)  # unix seconds
    return isinstance(value, str)


def _attribute_json(a: dict[str, Any]) -> dict[str, Any]:
    return {"type": "data_attribute", "id": a["id"], "model": "contact", "name": a["name"],
            "full_name": f"custom_attributes.{a['name']}", "label": a["name"], "description": a["description"],
            "data_type": "date" if a["data_type"] == "datetime" else a["data_type"],
            "api_writable": True, "ui_writable": True, "messenger_writable": False, "custom": True,
            "archived": a["archived"], "admin_id": ADMIN_ID, "created_at": a["created_at"], "updated_at": a["created_at"]}


def _matches(contact: IntercomContact, query: dict[str, Any]) -> bool:
    """One search filter, or an AND/OR of filters (fields: id, external_id, email, role,
    custom_attributes.NAME; operators =, !=, IN, NIN)."""
    if "field" not in query:
        results = (_matches(contact, q) for q in query.get("value") or [])
        return all(results) if query.get("operator") == "AND" else any(results)
    name, operator, value = query["field"], query.get("operator"), query.get("value")
    if name.startswith("custom_attributes."):
        actual = contact.custom_attributes.get(name.split(".", 1)[1])
    elif name in ("id", "external_id", "email", "role"):
        actual = getattr(contact, name)
    else:
        raise NotImplementedError(f"the fake does not search on {name!r}")

    def same(a: Any, b: Any) -> bool:
        return str(a).lower() == str(b).lower() if name == "email" and a is not None else a == b

    if operator == "=":
        return same(actual, value)
    if operator == "!=":
        return not same(actual, value)
    if operator in ("IN", "NIN"):
        inside = any(same(actual, v) for v in value or [])
        return inside if operator == "IN" else not inside
    raise NotImplementedError(f"the fake does not search with {operator!r}")
