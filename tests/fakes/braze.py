"""A stateful fake of Braze's ``POST /users/track``, over real HTTP.

It keeps user profiles (attributes, events, purchases) so a test can assert on what a sync
left behind in Braze, and answers with Braze's response shapes:

- success: ``201 {"message": "success", "attributes_processed": n, ...}``; a ``<array>_processed``
  key only for arrays present in the request.
- partial success: same, plus ``"errors": [{"type": "<reason>", "input_array": "attributes",
  "index": 3}]``; the other objects are processed.
- no valid object at all: ``400 {"message": "Valid data must be provided in the 'attributes',
  'events', or 'purchases' fields.", "errors": [...]}``.
- more than 75 objects: ``400 {"message": "Max Input Length Exceeded", "errors": []}``, nothing
  processed.
- bad key: ``401 {"message": "Invalid API Key"}``; over the rate limit: ``429`` without
  ``Retry-After``; every response carries ``X-RateLimit-Limit/-Remaining/-Reset`` (epoch s).

Sources: braze-docs ``post_user_track.md``, ``api_limits.md``, ``errors.md``; the 201 status
and the ``errors`` item shape from the mocks in segmentio/action-destinations
(``braze/__tests__/multistatus.test.ts``) and rudderlabs/rudder-transformer
(``test/integrations/destinations/braze/network.ts``), which also give the 401 body and the
"Valid data must be provided ..." message. The 429 and "Max Input Length Exceeded" bodies
use the documented error names; their exact bodies were not found in public sources.

Example::

    with FakeBraze(rate_limit=10, window_seconds=1.0) as braze:
        httpx.post(f"{braze.url}/users/track", headers={"Authorization": "Bearer test-braze-key"},
                   json={"attributes": [{"external_id": "u1", "churn_risk": True}]})
        assert braze.attributes(external_id="u1") == {"churn_risk": True}
"""

from __future__ import annotations

import copy
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .server import Body, FakeServer, RecordedRequest, Response

TRACK_PATH = "/users/track"
ARRAYS = ("attributes", "events", "purchases")
MAX_OBJECTS = 75
MAX_BODY_BYTES = 4 * 1024 * 1024  # Braze: payloads over 4 MB fail with 413
DEFAULT_RATE_LIMIT = 3000  # /users/track: 3,000 requests per 3 seconds (api_limits.md)

# Per-object error texts, as Braze words them (see the module docstring for sources).
MISSING_IDENTIFIER = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
INVALID_EMAIL = "The value provided for the 'email' field is not a valid email."
BLACKLISTED = "provided external_id is blacklisted and disallowed"
NO_VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
# Our own wording: Braze's exact texts for these were not found.
ONE_STRONG_IDENTIFIER = "only one of 'external_id', 'braze_id' or 'user_alias' may be given"
INVALID_ALIAS = "'user_alias' must be an object with 'alias_name' and 'alias_label'"
EXTERNAL_ID_NOT_STRING = "'external_id' must be a string"

INVALID_KEY_BODY = {"message": "Invalid API Key"}
RATE_LIMITED_BODY = {"message": "Rate Limited"}
TOO_MANY_OBJECTS_BODY = {"message": "Max Input Length Exceeded", "errors": []}

_STRONG_IDS = ("external_id", "braze_id", "user_alias")
_IDENTITY_KEYS = frozenset({*_STRONG_IDS, "email", "phone"})
_CONTROL_KEYS = frozenset({"_update_existing_only", "_merge_objects"})  # steer, never stored
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_REQUIRED = {"events": ("name", "time"), "purchases": ("product_id", "currency", "price", "time")}


@dataclass
class BrazeUser:
    """One Braze profile as the fake stores it.

    Attributes:
        braze_id: Braze's own id (24 hex characters, made up by the fake).
        external_id: The id the sync sends as ``external_id``, if any.
        user_aliases: ``{"alias_name", "alias_label"}`` objects this profile answers to.
        attributes: Standard and custom attributes, including ``email`` and ``phone``.
        events: Custom events in arrival order (the event object minus its identifiers).
        purchases: Purchases in arrival order (likewise).
    """

    braze_id: str
    external_id: str | None = None
    user_aliases: list[dict[str, str]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    purchases: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Rejection:
    predicate: Callable[[dict[str, Any]], bool]
    reason: str
    arrays: tuple[str, ...]


class FakeBraze(FakeServer):
    """Braze ``/users/track`` with profiles, per-object errors, rate limits and faults.

    Args:
        api_key: The REST key the fake accepts as ``Authorization: Bearer <key>``.
        rate_limit: Requests allowed per ``window_seconds``; ``None`` means Braze's default
            3,000, which a test never reaches.
        window_seconds: Length of the fixed rate-limit window.
        combined_batch_limit: Apply the 75-object limit to all arrays together, as Braze now
            does for most workspaces; the default is the legacy 75 per array.

    Attributes:
        users: Snapshot of all profiles, keyed by ``braze_id``.
        data_points: Attribute writes so far (Braze bills each, changed or not).
        throttled: How many 429s were answered (rate limiter and injected).
    """

    def __init__(
        self,
        api_key: str = "test-braze-key",
        rate_limit: int | None = None,
        window_seconds: float = 3.0,
        *,
        combined_batch_limit: bool = False,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.rate_limit = rate_limit if rate_limit is not None else DEFAULT_RATE_LIMIT
        self.window_seconds = window_seconds
        self.combined_batch_limit = combined_batch_limit
        self._users: dict[str, BrazeUser] = {}
        self._by_external_id: dict[str, BrazeUser] = {}
        self._rejections: list[_Rejection] = []
        self._data_points = 0
        self._window_end = 0.0
        self._window_count = 0

    # ------------------------------------------------------------------------- inspection
    @property
    def users(self) -> dict[str, BrazeUser]:
        with self._lock:
            return copy.deepcopy(self._users)

    @property
    def data_points(self) -> int:
        with self._lock:
            return self._data_points

    @property
    def throttled(self) -> int:
        return sum(1 for r in self.requests if r.status == 429)

    def user(
        self,
        *,
        external_id: str | None = None,
        email: str | None = None,
        braze_id: str | None = None,
        phone: str | None = None,
        user_alias: dict[str, str] | None = None,
    ) -> BrazeUser | None:
        """The profile Braze would pick for one identifier (a copy), or ``None``."""
        given = {
            "external_id": external_id,
            "email": email,
            "braze_id": braze_id,
            "phone": phone,
            "user_alias": user_alias,
        }
        chosen = [(kind, value) for kind, value in given.items() if value is not None]
        if len(chosen) != 1:
            raise TypeError("pass exactly one of external_id, email, braze_id, phone, user_alias")
        with self._lock:
            return copy.deepcopy(self._find(*chosen[0]))

    def attributes(
        self, external_id: str | None = None, **identifier: Any
    ) -> dict[str, Any] | None:
        """The attributes of a profile (``email``/``phone`` included), ``None`` if no profile."""
        found = self.user(external_id=external_id, **identifier)
        return found.attributes if found else None

    def events_of(self, external_id: str | None = None, **identifier: Any) -> list[dict[str, Any]]:
        """The events recorded for a profile, oldest first ([] when there is no profile)."""
        found = self.user(external_id=external_id, **identifier)
        return found.events if found else []

    def purchases_of(
        self, external_id: str | None = None, **identifier: Any
    ) -> list[dict[str, Any]]:
        """The purchases recorded for a profile, oldest first."""
        found = self.user(external_id=external_id, **identifier)
        return found.purchases if found else []

    # ------------------------------------------------------------------------ test control
    def reject(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        reason: str = BLACKLISTED,
        arrays: tuple[str, ...] = ARRAYS,
    ) -> None:
        """Make matching objects fail per object (a partial success), until cleared.

        Example: ``braze.reject(lambda obj: obj.get("external_id") == "u2")``.
        """
        with self._lock:
            self._rejections.append(_Rejection(predicate, reason, arrays))

    def clear_rejections(self) -> None:
        """Accept every valid object again (e.g. for the retry on the next run)."""
        with self._lock:
            self._rejections.clear()

    # ------------------------------------------------------------------------------- HTTP
    def fault_body(self, status: int) -> Body:
        if status == 429:
            return RATE_LIMITED_BODY
        if status == 401:
            return INVALID_KEY_BODY
        if status == 202:  # maintenance: accepted and queued, not processed
            return {"message": "queued"}
        return {"message": str(super().fault_body(status))}

    def finalize(self, request: RecordedRequest, response: Response) -> None:
        """Every Braze response carries the rate-limit headers."""
        with self._lock:
            self._roll_window()
            remaining = max(self.rate_limit - self._window_count, 0)
            response.headers.update(
                {
                    "X-RateLimit-Limit": str(self.rate_limit),
                    "X-RateLimit-Remaining": str(remaining),
                    "X-RateLimit-Reset": str(math.ceil(self._window_end)),
                }
            )

    def handle(self, request: RecordedRequest) -> Response:
        if request.path != TRACK_PATH:
            return Response(404, {"message": "Not Found"})
        if request.method != "POST":
            return Response(405, {"message": "Method Not Allowed"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Response(401, INVALID_KEY_BODY)
        if not self._take_rate_slot():
            return Response(429, RATE_LIMITED_BODY)  # Braze sends no Retry-After
        if len(request.raw) > MAX_BODY_BYTES:
            return Response(413, {"message": "Request Entity Too Large"})
        body = request.body
        if not isinstance(body, dict):
            return Response(400, {"message": "Bad Request"})
        arrays = {name: body[name] for name in ARRAYS if body.get(name) is not None}
        if any(not isinstance(objects, list) for objects in arrays.values()):
            return Response(400, {"message": "Bad Request"})
        if self._too_many(arrays):
            return Response(400, TOO_MANY_OBJECTS_BODY)
        with self._lock:
            return self._track(arrays)

    # ----------------------------------------------------------------------- rate limiting
    def _roll_window(self) -> None:
        now = time.time()
        if now >= self._window_end:
            self._window_end = now + self.window_seconds
            self._window_count = 0

    def _take_rate_slot(self) -> bool:
        with self._lock:
            self._roll_window()
            self._window_count += 1
            return self._window_count <= self.rate_limit

    def _too_many(self, arrays: dict[str, list[Any]]) -> bool:
        sizes = [len(objects) for objects in arrays.values()]
        if self.combined_batch_limit:
            return sum(sizes) > MAX_OBJECTS
        return any(size > MAX_OBJECTS for size in sizes)

    # --------------------------------------------------------------------------- tracking
    def _track(self, arrays: dict[str, list[Any]]) -> Response:
        """Validate and apply each object; bad objects become ``errors`` entries."""
        errors: list[dict[str, Any]] = []
        processed: dict[str, int] = {}
        # Braze processes attributes, then events, then purchases (api_limits.md).
        for name in ARRAYS:
            if name not in arrays:
                continue
            processed[name] = 0
            for index, obj in enumerate(arrays[name]):
                reason = self._problem(name, obj)
                if reason is not None:
                    errors.append({"type": reason, "input_array": name, "index": index})
                    continue
                self._apply(name, obj)
                processed[name] += 1
        if not any(processed.values()):
            return Response(400, {"message": NO_VALID_DATA, "errors": errors})
        body: dict[str, Any] = {"message": "success"}
        body.update({f"{name}_processed": count for name, count in processed.items()})
        if errors:
            body["errors"] = errors
        return Response(201, body)

    def _problem(self, array: str, obj: Any) -> str | None:
        """Why Braze would refuse this object, or ``None`` when it is fine."""
        if not isinstance(obj, dict):
            return MISSING_IDENTIFIER
        identifier = _identifier(obj)
        if isinstance(identifier, str):
            return identifier
        email = obj.get("email")
        if email is not None and not _EMAIL.match(str(email)):
            return INVALID_EMAIL
        for key in _REQUIRED.get(array, ()):
            if obj.get(key) in (None, ""):
                return f"'{key}' is required"
        for rejection in self._rejections:
            if array in rejection.arrays and rejection.predicate(obj):
                return rejection.reason
        return None

    def _apply(self, array: str, obj: dict[str, Any]) -> None:
        kind, value = _identifier(obj)  # type: ignore[misc]  # validated by _problem
        # Braze creates missing profiles unless told not to; alias-only profiles are created
        # only with an explicit `_update_existing_only: false` (post_user_track.md).
        update_existing_only = obj.get("_update_existing_only", kind == "user_alias")
        user = self._find(kind, value)
        if user is None:
            if update_existing_only:
                return  # Braze accepts the object and silently does nothing
            user = self._create(kind, value)
        if array == "attributes":
            self._set_attributes(user, obj, kind)
        else:
            skip = _IDENTITY_KEYS | _CONTROL_KEYS
            record = {k: copy.deepcopy(v) for k, v in obj.items() if k not in skip}
            (user.events if array == "events" else user.purchases).append(record)

    def _set_attributes(self, user: BrazeUser, obj: dict[str, Any], kind: str) -> None:
        merge_objects = obj.get("_merge_objects") is True
        for key, value in obj.items():
            if key in _CONTROL_KEYS or key in _STRONG_IDS or key == kind:
                continue
            self._data_points += 1  # billed whether or not the value changed
            current = user.attributes.get(key)
            if value is None:
                user.attributes.pop(key, None)  # null removes the attribute
            elif _is_array_op(value):
                user.attributes[key] = _apply_array_op(current, value)
            elif _is_increment(value) and isinstance(current, int | float | None):
                user.attributes[key] = (current or 0) + value["inc"]
            elif merge_objects and isinstance(value, dict) and isinstance(current, dict):
                user.attributes[key] = _deep_merge(current, value)
            else:
                user.attributes[key] = copy.deepcopy(value)

    # ------------------------------------------------------------------------ profile index
    def _find(self, kind: str, value: Any) -> BrazeUser | None:
        if kind == "external_id":
            return self._by_external_id.get(value)
        if kind == "braze_id":
            return self._users.get(value)
        if kind == "user_alias":
            alias = {"alias_name": value.get("alias_name"), "alias_label": value.get("alias_label")}
            return next((u for u in self._users.values() if alias in u.user_aliases), None)
        # email / phone: Braze updates the (most recent) profile with an external_id first.
        matches = [u for u in self._users.values() if _same(kind, u.attributes.get(kind), value)]
        with_external_id = [u for u in matches if u.external_id is not None]
        candidates = with_external_id or matches
        return candidates[-1] if candidates else None

    def _create(self, kind: str, value: Any) -> BrazeUser:
        user = BrazeUser(braze_id=value if kind == "braze_id" else uuid.uuid4().hex[:24])
        if kind == "external_id":
            user.external_id = value
            self._by_external_id[value] = user
        elif kind == "user_alias":
            alias = {"alias_name": value["alias_name"], "alias_label": value["alias_label"]}
            user.user_aliases.append(alias)
        elif kind in ("email", "phone"):
            user.attributes[kind] = value
        self._users[user.braze_id] = user
        return user


def _identifier(obj: dict[str, Any]) -> tuple[str, Any] | str:
    """The identifier Braze uses for an object, or the error text when it has none.

    external_id, braze_id and user_alias identify; without one of them, email wins over phone
    (post_user_track.md). Beside a strong identifier, email and phone are attributes to set.
    """
    strong = [key for key in _STRONG_IDS if obj.get(key) is not None]
    if len(strong) > 1:
        return ONE_STRONG_IDENTIFIER
    if strong:
        kind = strong[0]
        value = obj[kind]
        if kind == "external_id" and not isinstance(value, str):
            return EXTERNAL_ID_NOT_STRING
        if kind == "user_alias" and not (
            isinstance(value, dict)
            and isinstance(value.get("alias_name"), str)
            and isinstance(value.get("alias_label"), str)
        ):
            return INVALID_ALIAS
        return kind, value
    for kind in ("email", "phone"):
        if obj.get(kind) is not None:
            return kind, obj[kind]
    return MISSING_IDENTIFIER


def _same(kind: str, stored: Any, wanted: Any) -> bool:
    if stored is None:
        return False
    if kind == "email":  # Braze stores emails lower-cased
        return str(stored).lower() == str(wanted).lower()
    return bool(stored == wanted)


def _is_array_op(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and set(value) <= {"add", "remove"}
        and all(isinstance(items, list) for items in value.values())
    )


def _apply_array_op(current: Any, op: dict[str, list[Any]]) -> list[Any]:
    """``{"add": [...], "remove": [...]}`` on an array attribute; adding keeps values unique."""
    result = list(current) if isinstance(current, list) else []
    for item in op.get("add", []):
        if item not in result:
            result.append(item)
    removed = op.get("remove", [])
    return [item for item in result if item not in removed]


def _is_increment(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"inc"}
        and isinstance(value["inc"], int | float)
        and not isinstance(value["inc"], bool)
    )


def _deep_merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(current)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
