"""A stateful fake of the Salesforce APIs a sync uses, over real HTTP.

It keeps records per sObject so a test can assert on what a sync left in the org, and
answers with Salesforce's shapes:

- OAuth 2.0 client credentials: ``POST /services/oauth2/token`` (form body) →
  ``{"access_token", "instance_url", "token_type": "Bearer", "issued_at", ...}``; a wrong
  client → ``400 {"error": "invalid_client", "error_description": "invalid client
  credentials"}``; the flow switched off → ``400 invalid_grant``. The token endpoint is not
  an API call: it is neither counted nor rate limited.
- OAuth 2.0 JWT bearer flow, on the same endpoint: ``grant_type=urn:ietf:params:oauth:grant-type:
  jwt-bearer&assertion=<JWT>``. The assertion is verified for real (with ``cryptography``,
  not the client's JWT library): header ``{"alg": "RS256"}``, the RSA SHA-256 signature
  against the certificate (or public key) uploaded to the connected app (``jwt_certificate``),
  ``iss`` = the consumer key, ``aud`` = the login URL, ``exp`` in the future and at most
  ``jwt_max_ahead`` seconds away (Salesforce asks for 3 minutes; the fake allows 5), ``sub``
  (or ``prn``, which wins) a pre-authorized username (``jwt_users``). Answers ``{"access_token",
  "scope", "instance_url", "id", "token_type": "Bearer"}`` (no refresh token), or 400 with
  Salesforce's errors: ``invalid_client_id`` "client identifier invalid" (unknown ``iss``);
  ``invalid_grant`` "invalid assertion" (malformed, not RS256, bad signature, no or a too
  distant ``exp``), "audience is invalid", "expired authorization code" (``exp`` passed) and
  "user hasn't approved this consumer" (unknown or not pre-authorized user: Salesforce does
  not tell them apart). For a too distant ``exp`` Salesforce documents the rule, not the
  error; "invalid assertion" is the fake's choice.
- Every ``/services/data/vXX.X/...`` call needs ``Authorization: Bearer <token>``; unknown
  or expired tokens → ``401 [{"message": "Session expired or invalid", "errorCode":
  "INVALID_SESSION_ID"}]``. Tokens expire after ``token_ttl_requests`` API calls, or all at
  once with :meth:`FakeSalesforce.expire_tokens`.
- A daily API allocation: each API call counts; every API response carries
  ``Sforce-Limit-Info: api-usage=<used>/<limit>``; once used up → ``403 [{"message":
  "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]``.
- sObject Collections upsert: ``PATCH /composite/sobjects/{object}/{externalIdField}``
  ``{"allOrNone": false, "records": [{"attributes": {"type": ...}, ...}]}`` → ``200`` with
  one ``{"id", "success", "errors": [{"statusCode", "message", "fields"}], "created"}`` per
  record, in request order; more than 200 records → ``400 EXCEEDED_ID_LIMIT``. A record
  created without the object's required fields fails with ``REQUIRED_FIELD_MISSING``.
- Bulk API 2.0 ingest jobs: create (``Open``), one CSV upload (``201``), ``UploadComplete``,
  then ``InProgress`` for ``job_polls`` status reads and ``JobComplete`` (or ``Failed`` with
  an ``errorMessage``, see :meth:`FakeSalesforce.fail_next_job`); results as CSV:
  ``successfulResults`` (``sf__Id,sf__Created,<columns sent>``), ``failedResults``
  (``sf__Id,sf__Error,<columns sent>``, the error as ``CODE:message:fields --``) and
  ``unprocessedrecords``, in an order unrelated to the upload's (the docs promise none).
  Empty CSV values leave a field as it is; ``#N/A`` sets it to null.

Sources: Salesforce REST API guide (sObject Collections upsert; status codes and error
responses), Bulk API 2.0 guide (create/upload/close/get job, successful/failed/unprocessed
results, "Valid CSV Record Rows"), the UpsertResult reference (``id`` is null on failure),
OAuth 2.0 JWT Bearer Flow for Server-to-Server Integration (help.salesforce.com);
the ``sf__Error`` layout and "TotalRequests Limit exceeded." from public issue threads.

Example::

    with FakeSalesforce() as sf:
        token = httpx.post(f"{sf.url}/services/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": sf.client_id,
            "client_secret": sf.client_secret}).json()["access_token"]
        httpx.patch(f"{sf.url}/services/data/v62.0/composite/sobjects/Contact/External_Id__c",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"allOrNone": False, "records": [
                        {"attributes": {"type": "Contact"}, "External_Id__c": "u1", "LastName": "Doe"}]})
        assert sf.record("Contact", External_Id__c="u1")["LastName"] == "Doe"
"""

from __future__ import annotations

import base64
import binascii
import copy
import csv
import io
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import NameOID

from .server import Body, FakeServer, RecordedRequest, Response

TOKEN_PATH = "/services/oauth2/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_USER = "cdp-sync@acme.example"  # the pre-authorized integration user
MAX_COLLECTION = 200
NULL = "#N/A"  # Bulk CSV: set the field to null (an empty value leaves it unchanged)

SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
LIMIT_EXCEEDED = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
TOO_MANY_RECORDS = [{"message": "record limit reached. cannot submit more than 200 records into this call",
                     "errorCode": "EXCEEDED_ID_LIMIT"}]
ROLLED_BACK = ("ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "Record rolled back because not all records were valid and the request was using AllOrNone header")

_API = re.compile(r"^/services/data/v(\d+\.\d+)(/.*)?$")
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})


@dataclass(frozen=True)
class SObjectType:
    """What the fake knows of one sObject.

    Attributes:
        prefix: The key prefix of its record ids (``003`` for Contact).
        required: Fields a record must have to be created (and may not be nulled).
        types: Field → ``boolean | double | int | datetime | date | string``; JSON values
            must have the matching JSON type, CSV values must parse. Others are free.
        fields: The fields that exist; ``None`` accepts any field name.
    """

    prefix: str
    required: tuple[str, ...] = ()
    types: Mapping[str, str] = field(default_factory=dict)
    fields: frozenset[str] | None = None


STANDARD_OBJECTS: dict[str, SObjectType] = {
    "Account": SObjectType("001", ("Name",)),
    "Contact": SObjectType("003", ("LastName",)),
    "Lead": SObjectType("00Q", ("LastName", "Company")),
}


@dataclass(frozen=True)
class ConnectedAppKey:
    """A connected app's key pair: ``certificate`` goes to the fake (``jwt_certificate``),
    :meth:`pem` to the client (``private_key_path``)."""

    private_key: rsa.RSAPrivateKey
    certificate: bytes  # PEM, self-signed, as uploaded under "Use digital signatures"

    @classmethod
    def generate(cls, bits: int = 2048) -> ConnectedAppKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cdp-sync")])
        now = datetime.now(UTC)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                       .serial_number(x509.random_serial_number()).not_valid_before(now)
                       .not_valid_after(now + timedelta(days=365)).sign(key, SHA256()))
        return cls(key, certificate.public_bytes(serialization.Encoding.PEM))

    def pem(self, kind: str = "pkcs8", passphrase: str | None = None) -> bytes:
        """The private key as ``openssl`` writes it: ``pkcs8`` (BEGIN [ENCRYPTED] PRIVATE KEY)
        or ``pkcs1`` (BEGIN RSA PRIVATE KEY, with a DEK-Info header when encrypted)."""
        formats = {"pkcs8": serialization.PrivateFormat.PKCS8,
                   "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL}
        encryption = (serialization.BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase
                      else serialization.NoEncryption())
        return self.private_key.private_bytes(serialization.Encoding.PEM, formats[kind], encryption)


@dataclass
class BulkJob:
    """One Bulk API 2.0 ingest job as the fake keeps it."""

    id: str
    object: str
    operation: str
    external_id: str | None
    line_ending: str
    state: str = "Open"
    csv: str | None = None
    final_state: str | None = None  # where the job ends once processed
    polls_left: int = 0  # status reads that still say InProgress
    error_message: str | None = None
    header: list[str] = field(default_factory=list)
    successful: list[tuple[str, bool, list[str]]] = field(default_factory=list)  # (id, created, row)
    failed: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (id, error, row)
    unprocessed: list[list[str]] = field(default_factory=list)
    created: str = field(default_factory=lambda: _now())


class _RecordError(Exception):
    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or []


class _RequestError(Exception):
    """The whole request is refused (a 4xx with Salesforce's error array)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = Response(status, [{"message": message, "errorCode": code}])


class FakeSalesforce(FakeServer):
    """Salesforce with records, OAuth tokens, an API allocation, Collections and Bulk 2.0.

    Args:
        client_id, client_secret: The connected app's credentials the token endpoint accepts.
        objects: sObject types by name; default Account, Contact and Lead. Any name ending
            in ``__c`` is a custom object without required fields.
        api_limit: The daily API allocation; ``api_used`` calls are already spent.
        token_ttl_requests: API calls a token serves before it expires (``None``: never).
        job_polls: Status reads of a closed Bulk job that still answer ``InProgress``.
        client_credentials_enabled: ``False`` answers the token request ``invalid_grant``.
        jwt_certificate: PEM certificate (or public key) uploaded to the connected app for
            the JWT bearer flow; ``None``: every assertion is refused ("invalid assertion").
        jwt_users: Usernames pre-authorized on the connected app (the assertion's ``sub``).
        jwt_audience: The login URL the assertion's ``aud`` must name; default :attr:`url`.
        jwt_max_ahead: How far in the future ``exp`` may be, in seconds.

    Attributes:
        tokens_issued: Tokens handed out so far (by either flow).
        jobs: Snapshot of the Bulk jobs, by id.
    """

    def __init__(
        self,
        client_id: str = "test-client-id",
        client_secret: str = "test-client-secret",
        *,
        objects: Mapping[str, SObjectType] | None = None,
        api_limit: int = 15_000,
        api_used: int = 0,
        token_ttl_requests: int | None = None,
        job_polls: int = 1,
        client_credentials_enabled: bool = True,
        jwt_certificate: bytes | str | None = None,
        jwt_users: Collection[str] = (JWT_USER,),
        jwt_audience: str | None = None,
        jwt_max_ahead: float = 300.0,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.objects = dict(STANDARD_OBJECTS if objects is None else objects)
        self.api_limit = api_limit
        self._api_used = api_used
        self.token_ttl_requests = token_ttl_requests
        self.job_polls = job_polls
        self.client_credentials_enabled = client_credentials_enabled
        self.jwt_key = _public_key(jwt_certificate) if jwt_certificate is not None else None
        self.jwt_users = frozenset(jwt_users)
        self.jwt_audience = jwt_audience
        self.jwt_max_ahead = jwt_max_ahead
        self._tokens: dict[str, int] = {}  # live token → API calls served
        self._tokens_issued = 0
        self._records: dict[str, dict[str, dict[str, Any]]] = {}  # object → Id → fields
        self._index: dict[tuple[str, str], dict[str, str]] = {}  # (object, field) → value → Id
        self._jobs: dict[str, BulkJob] = {}
        self._ids = itertools.count(1)
        self._fail_next_job: str | None = None
        self._rejections: list[tuple[Callable[[str, dict[str, Any]], bool], str, str]] = []

    # ------------------------------------------------------------------------- inspection
    @property
    def api_used(self) -> int:
        with self._lock:
            return self._api_used

    @api_used.setter
    def api_used(self, value: int) -> None:
        with self._lock:
            self._api_used = value

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return self._tokens_issued

    @property
    def login_url(self) -> str:
        """What a JWT bearer assertion's ``aud`` must be."""
        return self.jwt_audience or self.url

    def assertions(self) -> list[str]:
        """The JWT bearer assertions received so far, accepted or not (to check what a client
        sent, and that it never leaks them)."""
        return [form["assertion"] for form in map(_form, self.requests)
                if form.get("grant_type") == JWT_BEARER and "assertion" in form]

    @property
    def jobs(self) -> dict[str, BulkJob]:
        with self._lock:
            return copy.deepcopy(self._jobs)

    def records(self, sobject: str) -> dict[str, dict[str, Any]]:
        """All records of ``sobject`` (copies), by record Id."""
        with self._lock:
            return copy.deepcopy(self._records.get(sobject, {}))

    def record(self, sobject: str, **match: Any) -> dict[str, Any] | None:
        """The record whose one given field has the value, e.g. ``record("Contact",
        External_Id__c="u1")``; ``None`` when there is none."""
        [(name, value)] = match.items()
        with self._lock:
            record_id = self._lookup(sobject, name, value)
            return copy.deepcopy(self._records[sobject][record_id]) if record_id else None

    # ------------------------------------------------------------------------ test control
    def expire_tokens(self) -> None:
        """Every token handed out so far is now expired (the next call gets a 401)."""
        with self._lock:
            self._tokens.clear()

    def fail_next_job(self, message: str = "InvalidBatch : Failed to process query") -> None:
        """The next Bulk job closed ends ``Failed`` with this ``errorMessage``; nothing of it
        is applied and all its rows are unprocessed."""
        with self._lock:
            self._fail_next_job = message

    def reject(self, predicate: Callable[[str, dict[str, Any]], bool], code: str = "FIELD_CUSTOM_VALIDATION_EXCEPTION",
               message: str = "Rejected by a validation rule") -> None:
        """Records for which ``predicate(object, values)`` holds fail per record (Collections
        and Bulk alike), as a validation rule would, until cleared."""
        with self._lock:
            self._rejections.append((predicate, code, message))

    def clear_rejections(self) -> None:
        with self._lock:
            self._rejections.clear()

    # ------------------------------------------------------------------------------- HTTP
    def fault_body(self, status: int) -> Body:
        if status == 401:
            return SESSION_EXPIRED
        if status == 403:
            return LIMIT_EXCEEDED
        if status == 404:
            return NOT_FOUND
        if status >= 500:
            return [{"errorCode": "SERVER_UNAVAILABLE", "message": "Server temporarily unavailable"}]
        return [{"errorCode": "BAD_REQUEST", "message": str(super().fault_body(status))}]

    def finalize(self, request: RecordedRequest, response: Response) -> None:
        """Every API response says how much of the daily allocation is used."""
        if request.path.startswith("/services/data/"):
            with self._lock:
                response.headers["Sforce-Limit-Info"] = f"api-usage={self._api_used}/{self.api_limit}"

    def handle(self, request: RecordedRequest) -> Response:
        if request.path == TOKEN_PATH:
            return self._token(request)
        match = _API.match(request.path.rstrip("/"))
        if match is None:
            return Response(404, NOT_FOUND)
        with self._lock:
            if not self._authorized(request.headers.get("authorization", "")):
                return Response(401, SESSION_EXPIRED)
            if self._api_used >= self.api_limit:
                return Response(403, LIMIT_EXCEEDED)
            self._api_used += 1
            try:
                return self._route(request, match.group(1), (match.group(2) or "/").strip("/").split("/"))
            except _RequestError as error:
                return error.response

    def _route(self, request: RecordedRequest, version: str, parts: list[str]) -> Response:
        method = request.method
        if parts[:2] == ["composite", "sobjects"] and len(parts) == 4 and method == "PATCH":
            return self._collections_upsert(parts[2], parts[3], request.body)
        if parts[:2] == ["jobs", "ingest"]:
            if len(parts) == 2 and method == "POST":
                return self._create_job(request.body, version)
            job = self._jobs.get(parts[2]) if len(parts) > 2 else None
            if job is None:
                return Response(404, NOT_FOUND)
            if len(parts) == 3:
                if method == "GET":
                    return Response(200, self._job_info(job, poll=True, version=version))
                if method == "PATCH":
                    return self._change_state(job, request.body, version)
                if method == "DELETE":
                    del self._jobs[job.id]
                    return Response(204)
            if len(parts) == 4 and parts[3] == "batches" and method == "PUT":
                return self._upload(job, request)
            if len(parts) == 4 and method == "GET":
                return self._results(job, parts[3])
        if parts == ["limits"] and method == "GET":
            return Response(200, {"DailyApiRequests": {"Max": self.api_limit,
                                                       "Remaining": self.api_limit - self._api_used}})
        return Response(404, NOT_FOUND)

    # ------------------------------------------------------------------------------ OAuth
    def _token(self, request: RecordedRequest) -> Response:
        if request.method != "POST":
            return Response(405, "Method Not Allowed")
        form = _form(request)
        if form.get("grant_type") == JWT_BEARER:
            return self._jwt_bearer(form.get("assertion", ""))
        if form.get("grant_type") != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return Response(400, {"error": "invalid_client", "error_description": "invalid client credentials"})
        if not self.client_credentials_enabled:
            return Response(400, {"error": "invalid_grant", "error_description": "no client credentials user enabled"})
        token = self._issue()
        return Response(200, {
            "access_token": token, "signature": secrets.token_urlsafe(16), "scope": "api",
            "instance_url": self.url, "id": f"{self.url}/id/00D5g000004fakeEAA/0055g00000fakeAAA",
            "token_type": "Bearer", "issued_at": str(int(time.time() * 1000)),
        })

    def _jwt_bearer(self, assertion: str) -> Response:
        """Verify the assertion as Salesforce does; the token, or Salesforce's 400."""
        def refused(description: str) -> Response:
            return Response(400, {"error": "invalid_grant", "error_description": description})

        try:
            encoded_header, encoded_claims, encoded_signature = assertion.split(".")
            header, claims = json.loads(_unbase64(encoded_header)), json.loads(_unbase64(encoded_claims))
            signature = _unbase64(encoded_signature)
        except (ValueError, binascii.Error):
            return refused("invalid assertion")
        if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
            return refused("invalid assertion")
        if claims.get("iss") != self.client_id:  # the connected app (and its certificate) is found by iss
            return Response(400, {"error": "invalid_client_id", "error_description": "client identifier invalid"})
        if self.jwt_key is None:
            return refused("invalid assertion")
        try:
            self.jwt_key.verify(signature, f"{encoded_header}.{encoded_claims}".encode("ascii"), PKCS1v15(), SHA256())
        except InvalidSignature:
            return refused("invalid assertion")
        if claims.get("aud") != self.login_url:
            return refused("audience is invalid")
        exp = claims.get("exp")
        if isinstance(exp, str) and exp.isdigit():  # Salesforce's own example sends "1333685628"
            exp = int(exp)
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return refused("invalid assertion")
        now = time.time()
        if exp <= now:
            return refused("expired authorization code")
        if exp > now + self.jwt_max_ahead:
            return refused("invalid assertion")
        if claims.get("prn", claims.get("sub")) not in self.jwt_users:
            return refused("user hasn't approved this consumer")
        token = self._issue()
        return Response(200, {
            "access_token": token, "scope": "api", "instance_url": self.url,
            "id": f"{self.url}/id/00D5g000004fakeEAA/0055g00000fakeAAA", "token_type": "Bearer",
        })

    def _issue(self) -> str:
        token = f"00D5g000004fake!{secrets.token_urlsafe(24)}"
        with self._lock:
            self._tokens[token] = 0
            self._tokens_issued += 1
        return token

    def _authorized(self, header: str) -> bool:
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
        if token is None or token not in self._tokens:
            return False
        if self.token_ttl_requests is not None and self._tokens[token] >= self.token_ttl_requests:
            del self._tokens[token]
            return False
        self._tokens[token] += 1
        return True

    # ------------------------------------------------------------------------ Collections
    def _collections_upsert(self, sobject: str, external_id: str, body: Any) -> Response:
        kind = self._type(sobject)
        if kind is None:
            return Response(404, NOT_FOUND)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise _RequestError(400, "JSON_PARSER_ERROR", "The request body must have a `records` list")
        records = body["records"]
        if len(records) > MAX_COLLECTION:
            return Response(400, TOO_MANY_RECORDS)
        self._check_field(sobject, kind, external_id)
        for record in records:
            self._check_json_record(sobject, kind, record)
        all_or_none = body.get("allOrNone") is True
        saved = (copy.deepcopy(self._records), copy.deepcopy(self._index)) if all_or_none else None
        results: list[dict[str, Any]] = []
        for record in records:
            values = {k: _normalize_json(kind.types.get(k), v) for k, v in record.items() if k != "attributes"}
            try:
                record_id, created = self._upsert(sobject, kind, external_id, values)
                results.append({"id": record_id, "success": True, "errors": [], "created": created})
            except _RecordError as error:
                results.append({"id": None, "success": False, "created": False, "errors": [
                    {"statusCode": error.code, "message": error.message, "fields": error.fields}]})
        if saved is not None and not all(r["success"] for r in results):
            self._records, self._index = saved
            results = [r if not r["success"] else {"id": None, "success": False, "created": False, "errors": [
                {"statusCode": ROLLED_BACK[0], "message": ROLLED_BACK[1], "fields": []}]} for r in results]
        return Response(200, results)

    def _check_json_record(self, sobject: str, kind: SObjectType, record: Any) -> None:
        if not isinstance(record, dict) or not isinstance(record.get("attributes"), dict) \
                or record["attributes"].get("type") != sobject:
            raise _RequestError(400, "INVALID_TYPE", f"Each record needs attributes: {{type: {sobject}}}")
        for name, value in record.items():
            if name == "attributes":
                continue
            self._check_field(sobject, kind, name)
            expected = kind.types.get(name)
            if value is not None and expected is not None and not _json_fits(expected, value):
                raise _RequestError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {expected} from "
                                                              f"{type(value).__name__} value {value!r} ({name})")

    def _check_field(self, sobject: str, kind: SObjectType, name: str) -> None:
        if kind.fields is not None and name not in kind.fields:
            raise _RequestError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}")

    # --------------------------------------------------------------------------- records
    def _type(self, sobject: str) -> SObjectType | None:
        if sobject not in self.objects and sobject.endswith("__c"):
            self.objects[sobject] = SObjectType("a0" + str(len(self.objects) % 10))
        return self.objects.get(sobject)

    def _lookup(self, sobject: str, name: str, value: Any) -> str | None:
        key = (sobject, name)
        if key not in self._index:  # indexed on first use, then kept up to date by _write
            self._index[key] = {str(r[name]): rid for rid, r in self._records.get(sobject, {}).items()
                                if r.get(name) is not None}
        return self._index[key].get(str(value))

    def _upsert(self, sobject: str, kind: SObjectType, external_id: str | None,
                values: dict[str, Any]) -> tuple[str, bool]:
        """Create or update one record; raises _RecordError like the org would."""
        key = values.get(external_id) if external_id else None
        if external_id and key in (None, ""):
            raise _RecordError("MISSING_ARGUMENT", f"{external_id} not specified", [external_id])
        for predicate, code, message in self._rejections:
            if predicate(sobject, values):
                raise _RecordError(code, message)
        record_id = self._lookup(sobject, external_id, key) if external_id else None
        current = self._records.get(sobject, {}).get(record_id, {}) if record_id else {}
        merged = {**current, **values}
        missing = [name for name in kind.required if merged.get(name) in (None, "")]
        if missing:
            raise _RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                               missing)
        created = record_id is None
        if created:
            record_id = f"{kind.prefix}5g{next(self._ids):010d}AAA"  # 18 characters, like Salesforce ids
            merged["Id"] = record_id
        self._write(sobject, record_id, current, merged)
        return record_id, created

    def _write(self, sobject: str, record_id: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        self._records.setdefault(sobject, {})[record_id] = after
        for (indexed_object, name), index in self._index.items():
            if indexed_object == sobject and before.get(name) != after.get(name):
                if before.get(name) is not None:
                    index.pop(str(before[name]), None)
                if after.get(name) is not None:
                    index[str(after[name])] = record_id

    # --------------------------------------------------------------------------- Bulk 2.0
    def _create_job(self, body: Any, version: str) -> Response:
        if not isinstance(body, dict):
            raise _RequestError(400, "INVALIDJOB", "InvalidJob : the job needs a JSON body")
        sobject, operation = body.get("object"), body.get("operation")
        if not isinstance(sobject, str) or self._type(sobject) is None:
            raise _RequestError(400, "INVALIDJOB", f"InvalidJob : Unable to find object: {sobject}")
        if operation not in ("insert", "upsert"):
            raise _RequestError(400, "INVALIDJOB", f"InvalidJob : operation {operation!r} is not supported by the fake")
        if operation == "upsert" and not body.get("externalIdFieldName"):
            raise _RequestError(400, "INVALIDJOB", "InvalidJob : External ID was blank for upsert")
        if body.get("contentType", "CSV") != "CSV" or body.get("columnDelimiter", "COMMA") != "COMMA":
            raise _RequestError(400, "INVALIDJOB", "InvalidJob : the fake reads comma-separated CSV only")
        job = BulkJob(id=f"7505g{next(self._ids):010d}AAA", object=sobject, operation=operation,
                      external_id=body.get("externalIdFieldName"), line_ending=body.get("lineEnding", "LF"))
        self._jobs[job.id] = job
        return Response(200, self._job_info(job, poll=False, version=version))

    def _upload(self, job: BulkJob, request: RecordedRequest) -> Response:
        if job.state != "Open" or job.csv is not None:
            raise _RequestError(409, "INVALIDJOBSTATE", f"Job {job.id} accepts no more data (state {job.state})")
        job.csv = request.raw.decode("utf-8")
        return Response(201)

    def _change_state(self, job: BulkJob, body: Any, version: str) -> Response:
        wanted = body.get("state") if isinstance(body, dict) else None
        if wanted == "UploadComplete" and job.state == "Open":
            job.state = "UploadComplete"
            self._process(job)
        elif wanted == "Aborted" and job.state not in _TERMINAL:
            job.state = job.final_state = "Aborted"
            job.polls_left = 0
        else:
            raise _RequestError(400, "INVALIDJOBSTATE", f"Job {job.id} cannot go from {job.state} to {wanted}")
        return Response(200, self._job_info(job, poll=False, version=version))

    def _process(self, job: BulkJob) -> None:
        """Apply the uploaded CSV at once; status reads then reveal the outcome slowly."""
        job.polls_left = self.job_polls
        rows = self._parse(job)
        if rows is not None and self._fail_next_job is not None:
            job.error_message, self._fail_next_job = self._fail_next_job, None
            job.final_state, job.unprocessed = "Failed", rows
            return
        if rows is None:
            job.final_state = "Failed"
            return
        kind = self.objects[job.object]
        for row in rows:
            try:
                values = {name: _from_csv(kind.types.get(name), name, text)
                          for name, text in zip(job.header, row, strict=True) if text != ""}
                record_id, created = self._upsert(job.object, kind, job.external_id, values)
                job.successful.append((record_id, created, row))
            except _RecordError as error:
                job.failed.append(("", f"{error.code}:{error.message}:{','.join(error.fields)} --", row))
        job.final_state = "JobComplete"

    def _parse(self, job: BulkJob) -> list[list[str]] | None:
        """The uploaded rows, or None when the whole job fails (with its errorMessage set)."""
        text = job.csv
        if not text:
            job.error_message = "InvalidBatch : No data was uploaded for this job"
            return None
        if job.line_ending == "LF" and "\r\n" in text:
            job.error_message = "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF"
            return None
        table = list(csv.reader(io.StringIO(text, newline="")))
        job.header, rows = table[0], [row for row in table[1:] if row]
        kind = self.objects[job.object]
        for name in job.header:
            if kind.fields is not None and name not in kind.fields:
                job.error_message = f"InvalidBatch : Field name not found : {name}"
                return None
        if job.external_id and job.external_id not in job.header:
            job.error_message = f"InvalidBatch : Field name not found : {job.external_id}"
            return None
        if any(len(row) != len(job.header) for row in rows):
            job.error_message = "ClientInputError : a row has a different number of columns than the header"
            return None
        return rows

    def _job_info(self, job: BulkJob, *, poll: bool, version: str) -> dict[str, Any]:
        if poll and job.final_state is not None and job.state not in _TERMINAL:
            if job.polls_left > 0:
                job.polls_left -= 1
                job.state = "InProgress"
            else:
                job.state = job.final_state
        done = job.state in _TERMINAL
        info: dict[str, Any] = {
            "id": job.id, "operation": job.operation, "object": job.object, "createdById": "0055g00000fakeAAA",
            "createdDate": job.created, "systemModstamp": _now(), "state": job.state,
            "externalIdFieldName": job.external_id, "concurrencyMode": "Parallel", "contentType": "CSV",
            "apiVersion": float(version), "jobType": "V2Ingest", "lineEnding": job.line_ending,
            "columnDelimiter": "COMMA",
            "numberRecordsProcessed": len(job.successful) + len(job.failed) if done else 0,
            "numberRecordsFailed": len(job.failed) if done else 0,
            "retries": 0, "totalProcessingTime": 0, "apiActiveProcessingTime": 0, "apexProcessingTime": 0,
        }
        if job.state == "Failed":
            info["errorMessage"] = job.error_message
        return info

    def _results(self, job: BulkJob, which: str) -> Response:
        if job.state not in _TERMINAL:
            raise _RequestError(409, "INVALIDJOBSTATE", f"Job {job.id} is not finished (state {job.state})")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        # Salesforce promises no order: the fake answers last row first to keep clients honest.
        if which == "successfulResults":
            writer.writerow(["sf__Id", "sf__Created", *job.header])
            writer.writerows([rid, str(created).lower(), *row] for rid, created, row in reversed(job.successful))
        elif which == "failedResults":
            writer.writerow(["sf__Id", "sf__Error", *job.header])
            writer.writerows([rid, error, *row] for rid, error, row in reversed(job.failed))
        elif which == "unprocessedrecords":
            writer.writerow(job.header)
            writer.writerows(reversed(job.unprocessed))
        else:
            return Response(404, NOT_FOUND)
        return Response(200, out.getvalue(), {"Content-Type": "text/csv"})


# ------------------------------------------------------------------------------- values
def _form(request: RecordedRequest) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.raw.decode("utf-8", "replace")).items()}


def _unbase64(text: str) -> bytes:
    """base64url without padding (JWS compact serialization)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_key(pem: bytes | str) -> RSAPublicKey:
    """The RSA public key of a PEM certificate (what a connected app holds) or public key."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = x509.load_pem_x509_certificate(data).public_key() if b"CERTIFICATE" in data else load_pem_public_key(data)
    if not isinstance(key, RSAPublicKey):
        raise TypeError("a connected app's certificate holds an RSA key")
    return key


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _json_fits(expected: str, value: Any) -> bool:
    if expected == "boolean":
        return isinstance(value, bool)
    if expected in ("double", "int"):
        return isinstance(value, int | float) and not isinstance(value, bool) \
            and (expected == "double" or float(value).is_integer())
    if expected == "datetime":
        return isinstance(value, str) and _DATETIME.match(value) is not None
    if expected == "date":
        return isinstance(value, str) and _DATE.match(value) is not None
    return isinstance(value, str)


def _normalize_json(expected: str | None, value: Any) -> Any:
    """Store values as Salesforce returns them (datetimes in UTC with milliseconds)."""
    if expected == "datetime" and isinstance(value, str):
        return _datetime(value)
    return value


def _datetime(text: str) -> str:
    date, clock, fraction, zone = _DATETIME.match(text).groups()  # type: ignore[union-attr]
    zone = "+00:00" if zone == "Z" else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    parsed = datetime.fromisoformat(f"{date}T{clock}{(fraction or '.0').ljust(4, '0')}{zone}").astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}+0000"


def _from_csv(expected: str | None, name: str, text: str) -> Any:
    """One CSV value as the field's type; raises the row error Salesforce would."""
    if text == NULL:
        return None
    try:
        if expected == "boolean":
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if expected == "double":
            return float(text)
        if expected == "int":
            return int(text)
        if expected == "datetime":
            if not _DATETIME.match(text):
                raise ValueError(text)
            return _datetime(text)
        if expected == "date" and not _DATE.match(text):
            raise ValueError(text)
    except ValueError:
        raise _RecordError("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {text}",
                           [name]) from None
    return text
