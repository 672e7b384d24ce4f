"""Salesforce: records of any sObject (``object: Contact``, Lead, ``Member__c``) upserted by
the external-id field named in ``match``; ``fields`` set Salesforce fields from traits,
profile columns or ``in_audience`` (false on exit under ``mirror``).

Facts (../shared/reference/destinations.md; Salesforce REST API and Bulk API 2.0 guides):
- The token comes from OAuth 2.0 client credentials at ``{instance_url}/services/oauth2/token``,
  or (``auth: jwt``) from the JWT bearer flow at ``{login_url}/services/oauth2/token``: an
  RS256 assertion {iss: consumer key, sub: username, aud: login URL, exp: within 3 minutes}
  signed with the key of the connected app's certificate, posted as
  ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=...``; no refresh token,
  so a new assertion is signed for every token. Errors are 400 ``{"error", "error_description"}``
  (OAuth 2.0 JWT Bearer Flow for Server-to-Server Integration, help.salesforce.com).
  A 401 ``INVALID_SESSION_ID`` means the token expired (sessions time out by the org's policy).
- sObject Collections upsert takes at most 200 records of one type and answers one
  UpsertResult per record, in request order, with ``allOrNone: false`` (the others are kept).
- Bulk API 2.0 ingest jobs take CSV; their result CSVs come in no promised order, so rows
  are matched back by the external-id value. An empty CSV value leaves a field unchanged;
  ``#N/A`` sets it to null ("Valid CSV Record Rows").
- Every API response carries ``Sforce-Limit-Info: api-usage=used/total`` (a rolling 24-hour
  allocation shared with every other integration of the org); past it, calls answer 403
  ``REQUEST_LIMIT_EXCEEDED`` with no Retry-After, so waiting within a run cannot help.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from cdp_warehouse.specs.models import SyncSpec
from cdp_warehouse.sync.changes import Change, FatalError, RetriableError, RowResult, SyncError
from cdp_warehouse.sync.destinations.base import Destination, Request, SyncContext, json_value
from cdp_warehouse.sync.http import HttpClient, RetryPolicy

log = logging.getLogger(__name__)

MAX_COLLECTION = 200  # records per sObject Collections request
# Rows per Bulk job: Salesforce cuts jobs into 10,000-record chunks anyway, and the engine
# keeps 2 × concurrency batches in memory, so bigger jobs would only cost memory.
BULK_JOB_ROWS = 10_000
BULK_POLL_FIRST, BULK_POLL_MAX, BULK_MAX_WAIT = 0.25, 15.0, 3600.0  # seconds
BULK_DONE = frozenset({"JobComplete", "Failed", "Aborted"})
CSV_NULL = "#N/A"
_USAGE = re.compile(r"(?:^|[\s,;])api-usage=(\d+)/(\d+)")  # not per-app-api-usage=...
TOKEN_PATH = "/services/oauth2/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN_URL = "https://login.salesforce.com"
# Salesforce wants `exp` within 3 minutes; 2 leave room for a clock that runs a little fast
# or slow on either side.
JWT_LIFETIME = 120  # seconds
_clock = time.time  # the assertion's clock (tests move it)


class Salesforce(Destination):
    type = "salesforce"

    @classmethod
    def check(cls, sync: SyncSpec) -> list[tuple[tuple[str, ...], str]]:
        problems = super().check(sync)

        def add(*path: str, message: str) -> None:
            problems.append((path, message))

        if not sync.object:
            add("object", message="salesforce needs the sObject to write: `object: Contact` "
                                  "(or Lead, or a custom object such as Member__c)")
        if not sync.match or len(sync.match) != 1:
            add("match", message="give exactly one external-id field and its source: `match: {External_Id__c: user_id}`")
        else:
            [(target, source)] = sync.match.items()
            if source in ("in_audience", "split"):
                add("match", message=f"`{source}` cannot identify a record: match on user_id, email or a trait")
            elif source != "user_id" and source not in sync.fields.values():
                # A Change carries user_id and the mapped fields only; keeping the value in
                # the synced payload is also what finds the record again on exit.
                add("match", message=f"map {source!r} in `fields` too (e.g. `fields: {{{target}: {source}}}`) "
                                     "to match on it")
            if sync.fields.get(target, source) != source:
                add("fields", target, message=f"{target} is the match field (from {source}); "
                                              f"it cannot also be set from {sync.fields[target]!r}")
        if sync.mode == "mirror" and "in_audience" not in sync.fields.values():
            add("mode", message="mirror sets membership false on exit: map a field to in_audience, "
                                "e.g. `fields: {Churn_Risk__c: in_audience}`")
        if sync.membership is not None:
            add("membership", message="salesforce keeps membership in a field: `fields: {Churn_Risk__c: in_audience}`")
        if sync.channel is not None:
            add("channel", message="`channel` does not apply to salesforce")
        if sync.events:
            add("events", message="`events` does not apply to salesforce")
        if sync.identify_by != "user_id":
            add("identify_by", message="salesforce finds records by the `match` field of profiles with a user_id; "
                                       "remove `identify_by`")
        return problems

    def __init__(self, settings: Any, context: SyncContext) -> None:
        super().__init__(settings, context)
        sync = context.sync
        [(self._key_field, self._key_source)] = (sync.match or {"": ""}).items()
        # where the match value is found in a row's fields (check() made sure it is there)
        self._key_target = next((t for t, s in sync.fields.items() if s == self._key_source), None)
        self._membership = [t for t, s in sync.fields.items() if s == "in_audience"]
        version = settings.api_version if settings.api_version.startswith("v") else f"v{settings.api_version}"
        self._api = f"/services/data/{version}"
        self._bulk = False
        self._session: _Session | None = None
        self._usage = _ApiUsage(settings.stop_at_api_usage)

    def connect(self) -> HttpClient:
        instance = self.settings.instance_url.rstrip("/")
        http = HttpClient((self.settings.base_url or instance).rstrip("/"), {"Accept": "application/json"},
                          concurrency=self.settings.concurrency, policy=RetryPolicy(timeout=self.settings.timeout))
        self._session = _Session(http, self._grant(instance))
        return http

    def _grant(self, instance: str) -> _Grant:
        s = self.settings
        if s.auth == "jwt":
            return _JwtBearer((s.login_url or LOGIN_URL).rstrip("/"), s.client_id, s.username, s.private_key_path,
                              s.private_key_passphrase, instance)
        return _ClientCredentials(f"{instance}{TOKEN_PATH}", s.client_id, s.client_secret)

    # ------------------------------------------------------------------ planning (pure)

    def batch_size(self, total: int) -> int:
        # The engine asks once per run, before building any request: the mode holds for the run.
        self._bulk = total >= self.settings.bulk_threshold
        return BULK_JOB_ROWS if self._bulk else MAX_COLLECTION

    def requests(self, rows: Sequence[Change]) -> list[Request]:
        plans = [p for p in map(self._plan, rows) if isinstance(p, dict)]
        if self._bulk:
            job = {"object": self.context.sync.object, "operation": "upsert", "externalIdFieldName": self._key_field,
                   "contentType": "CSV", "lineEnding": "LF"}
            return [Request("POST", f"{self._api}/jobs/ingest", {"job": job, "csv": self._csv(plans)}, tuple(rows))]
        kind = {"type": self.context.sync.object}
        records = [{"attributes": kind, **{name: _json(value) for name, value in plan.items()}} for plan in plans]
        url = f"{self._api}/composite/sobjects/{self.context.sync.object}/{self._key_field}"
        return [Request("PATCH", url, {"allOrNone": False, "records": records}, tuple(rows))]

    def _plan(self, row: Change) -> dict[str, Any] | RowResult:
        """The fields to write for ``row``, the external id first; or its result when there
        is nothing to send (no match value: rejected; nothing changed to write: accepted)."""
        key = self._key(row)
        if key is None or key == "":
            return RowResult(row.row_key, row.key_type, False,
                             f"no value for {self._key_field} (match: {self._key_source})")
        if row.kind == "removed":  # spec: on exit only the membership changes
            values: dict[str, Any] = dict.fromkeys(self._membership, False)
        else:
            values = row.values_to_send(self.context.sync.null_handling)
        if not values and row.kind != "added":
            return RowResult(row.row_key, row.key_type, True)
        return {self._key_field: key, **values}

    def _key(self, row: Change) -> Any:
        if self._key_source == "user_id":
            return row.user_id
        if row.kind == "removed":  # the fields are gone; the payload last accepted has them
            return json.loads(row.payload or "{}").get(self._key_target)
        return row.fields.get(self._key_target) if self._key_target else None

    def _csv(self, plans: list[dict[str, Any]]) -> str:
        """Bulk CSV: the external id, then only the columns some row writes (an empty cell
        leaves that field of that record as it is)."""
        present = {name for plan in plans for name in plan}
        columns = [self._key_field, *(t for t in self.context.sync.fields if t in present and t != self._key_field)]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_csv_value(plan[c]) if c in plan else "" for c in columns] for plan in plans)
        return out.getvalue()

    # ------------------------------------------------------------------ sending

    def send(self, request: Request) -> list[RowResult]:
        plans = [self._plan(row) for row in request.rows]
        if not any(isinstance(p, dict) for p in plans):
            return [p for p in plans if isinstance(p, RowResult)]
        # Stop before starting new work, not mid-way: a result in hand is still recorded.
        self._usage.check()
        if "csv" in request.body:
            sent = self._send_bulk(request, plans)
        else:
            sent = self._send_collection(request, plans)
        return [p if isinstance(p, RowResult) else sent[i] for i, p in enumerate(plans)]

    def _send_collection(self, request: Request, plans: list[dict[str, Any] | RowResult]) -> dict[int, RowResult]:
        answers = self._json(self._call(request.method, request.url, json=request.body))
        positions = [i for i, p in enumerate(plans) if isinstance(p, dict)]
        if not isinstance(answers, list) or len(answers) != len(positions):
            raise FatalError(f"salesforce answered {len(answers) if isinstance(answers, list) else 'no list of'} "
                             f"results for {len(positions)} records")
        results: dict[int, RowResult] = {}
        for i, answer in zip(positions, answers, strict=True):
            row = request.rows[i]
            reason = None if answer.get("success") else _reasons(answer.get("errors") or [])
            results[i] = RowResult(row.row_key, row.key_type, reason is None, reason)
        return results

    def _send_bulk(self, request: Request, plans: list[dict[str, Any] | RowResult]) -> dict[int, RowResult]:
        """Create the job, upload, close, wait, then read the results back by external id."""
        # not retried blindly: a retried create after a lost answer would leave a second job open
        job_id = self._json(self._call("POST", request.url, json=request.body["job"], retry=False))["id"]
        job = f"{request.url}/{job_id}"
        try:
            self._expect(self._call("PUT", f"{job}/batches", content=request.body["csv"].encode("utf-8"),
                                    headers={"Content-Type": "text/csv"}))
            self._expect(self._call("PATCH", job, json={"state": "UploadComplete"}))
        except SyncError:
            self._abort(job)  # an Open job would linger in the org's job list for days
            raise
        info = self._wait(job)
        sent = {i: p for i, p in enumerate(plans) if isinstance(p, dict)}
        log.info("salesforce bulk job %s %s: %s processed, %s failed", job_id, info["state"],
                 info.get("numberRecordsProcessed"), info.get("numberRecordsFailed"))
        if info["state"] != "JobComplete":
            reason = f"bulk job {job_id} {info['state']}: {info.get('errorMessage') or 'no message'}"
            return {i: RowResult(request.rows[i].row_key, request.rows[i].key_type, False, reason) for i in sent}
        processed, failed = int(info.get("numberRecordsProcessed") or 0), int(info.get("numberRecordsFailed") or 0)
        if failed == 0 and processed == len(sent):  # every row made it: no result download needed
            return {i: RowResult(request.rows[i].row_key, request.rows[i].key_type, True) for i in sent}
        outcome: dict[str, str | None] = {}  # external id as sent → None (accepted) or the reason
        if processed > failed:
            outcome.update(dict.fromkeys(self._result_keys(f"{job}/successfulResults")))
        if processed < len(sent):
            outcome.update(dict.fromkeys(self._result_keys(f"{job}/unprocessedrecords"),
                                         f"not processed by bulk job {job_id}"))
        if failed:
            outcome.update(self._result_keys(f"{job}/failedResults", "sf__Error"))
        results: dict[int, RowResult] = {}
        for i, plan in sent.items():
            key = _csv_value(plan[self._key_field])
            reason = outcome.get(key, f"missing from the results of bulk job {job_id}")
            results[i] = RowResult(request.rows[i].row_key, request.rows[i].key_type, reason is None, reason)
        return results

    def _wait(self, job: str) -> dict[str, Any]:
        """Poll the job with a growing delay: every poll is an API call on the daily allocation."""
        delay, waited = BULK_POLL_FIRST, 0.0
        while True:
            info = self._json(self._call("GET", job))
            if info.get("state") in BULK_DONE:
                return info
            if waited >= BULK_MAX_WAIT:
                self._abort(job)
                raise RetriableError(f"salesforce bulk job {job.rsplit('/', 1)[-1]} still {info.get('state')} "
                                     f"after {waited:.0f} s; aborted",
                                     hint="its rows stay pending and are sent on the next run")
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, BULK_POLL_MAX)

    def _abort(self, job: str) -> None:
        """Best effort: the run is failing already, so a refusal here changes nothing."""
        try:
            self._call("PATCH", job, json={"state": "Aborted"})
        except SyncError as error:
            log.warning("salesforce: could not abort bulk job %s: %s", job.rsplit("/", 1)[-1], error)

    def _result_keys(self, url: str, reason_column: str | None = None) -> dict[str, str | None]:
        """External id → reason (or None) from one result CSV of a job."""
        response = self._call("GET", url, headers={"Accept": "text/csv"})
        self._expect(response)
        reader = csv.DictReader(io.StringIO(response.text, newline=""))
        return {row[self._key_field]: row[reason_column] if reason_column else None for row in reader}

    # ------------------------------------------------------------------ calls

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One API call with the current token; a new token once when the session expired.
        401 and 403 are fatal for the run (HttpClient never retries them)."""
        headers = kwargs.pop("headers", {})
        for attempt in (1, 2):
            http = self.http
            assert self._session is not None  # set by connect()
            generation, token = self._session.token()
            response = http.request(method, url, headers={**headers, "Authorization": f"Bearer {token}"}, **kwargs)
            self._usage.note(response)
            if response.status_code == 401 and attempt == 1 and _error(response)[0] == "INVALID_SESSION_ID":
                self._session.expire(generation)
                continue
            if response.status_code in (401, 403):
                raise self._failure(response)
            return response
        raise AssertionError("unreachable")

    def _json(self, response: httpx.Response) -> Any:
        self._expect(response)
        return response.json()

    def _expect(self, response: httpx.Response) -> None:
        if response.status_code >= 300:
            raise self._failure(response)

    def _failure(self, response: httpx.Response) -> FatalError:
        """An answer that is not about one record: the same request would fail for every batch."""
        code, message = _error(response)
        text = f"salesforce answered {response.status_code}: {code}: {message}"
        if code == "REQUEST_LIMIT_EXCEEDED":
            return FatalError(text, hint="the org's API allocation is used up (a rolling 24 hours); the rows stay "
                                         "pending for a later run")
        if response.status_code in (401, 403) and self.settings.auth == "jwt":
            return FatalError(text, hint=f"check the connected app's OAuth scopes (api), the permissions of "
                                         f"{self.settings.username}, and that instance_url is that user's org")
        if response.status_code in (401, 403):
            return FatalError(text, hint="check the connected app (client credentials flow, its run-as user's "
                                         "permissions) and SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET")
        if code in ("NOT_FOUND", "INVALID_FIELD", "INVALID_TYPE", "INVALIDJOB", "JSON_PARSER_ERROR"):
            return FatalError(text, hint=f"check `object: {self.context.sync.object}`, `match` and `fields` against "
                                         f"the org's API names, and that {self._key_field} is an External ID field")
        return FatalError(text)

    def close(self) -> None:
        if self._usage.seen:
            log.info("salesforce %s: api-usage=%s/%s", self.context.destination, self._usage.used, self._usage.total)
        super().close()


class _Session:
    """The OAuth access token: fetched on first use (a run with nothing to send fetches
    none) and once more whenever a call says it expired; one fetch serves every thread."""

    def __init__(self, http: HttpClient, grant: _Grant) -> None:
        self._http, self._grant = http, grant
        self._lock = threading.Lock()
        self._token: str | None = None
        self._generation = 0

    def token(self) -> tuple[int, str]:
        with self._lock:  # held while fetching: the other threads wait for the same token
            if self._token is None:
                self._token = self._grant.fetch(self._http)
                self._generation += 1
            return self._generation, self._token

    def expire(self, generation: int) -> None:
        """Forget the token that failed, unless another thread already replaced it."""
        with self._lock:
            if generation == self._generation:
                self._token = None


class _Grant(Protocol):
    def fetch(self, http: HttpClient) -> str:
        """A new access token; raises FatalError (one line and a hint) when refused."""


class _ClientCredentials:
    """OAuth 2.0 client credentials: the connected app's id and secret, at the org's My Domain."""

    def __init__(self, url: str, client_id: str, client_secret: str) -> None:
        self._url = url
        self._form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}

    def fetch(self, http: HttpClient) -> str:
        response = http.request("POST", self._url, data=self._form)
        body = _oauth_body(response)
        if response.status_code == 200 and body.get("access_token"):
            return str(body["access_token"])
        # Salesforce's OAuth errors name the problem without echoing the secret; neither do we.
        said = f"{body.get('error', '')} {body.get('error_description', '')}" if body else response.text[:200]
        raise FatalError(f"salesforce token request answered {response.status_code}: {said}".strip(),
                         hint="check SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET, that the connected app allows "
                              "the client credentials flow with a run-as user, and instance_url (the org's My Domain)")


# error_description of a refused JWT bearer request → what to do about it
_JWT_HINTS = {
    "user hasn't approved this consumer":
        "check `username` (the exact Salesforce username; a sandbox's ends in .<sandbox name>) and pre-authorize "
        "it on the connected app: Manage → Edit Policies → Permitted Users: \"Admin approved users are "
        "pre-authorized\", then add the user's profile or a permission set",
    "invalid assertion":
        "the private key does not match the certificate uploaded to the connected app (\"Use digital signatures\"): "
        "upload the certificate of private_key_path, or point private_key_path at its key",
    "audience is invalid":
        "login_url must be https://login.salesforce.com (production), https://test.salesforce.com (sandbox) "
        "or the org's My Domain URL",
    "expired authorization code":
        "the assertion had expired when Salesforce read it: check this machine's clock (NTP)",
}


class _JwtBearer:
    """OAuth 2.0 JWT bearer flow: a fresh assertion, signed with the connected app's private
    key, for every token (Salesforce issues no refresh token in this flow). The key file is
    read on the first fetch; neither the key nor an assertion is ever logged or put in an
    error message."""

    def __init__(self, login_url: str, client_id: str, username: str, key_path: str, passphrase: str | None,
                 instance_url: str) -> None:
        self._login_url, self._client_id, self._username = login_url, client_id, username
        self._key_path, self._passphrase, self._instance_url = key_path, passphrase, instance_url
        self._key: RSAPrivateKey | None = None

    def fetch(self, http: HttpClient) -> str:
        for attempt in (1, 2):
            assertion = self._assertion()
            response = http.request("POST", f"{self._login_url}{TOKEN_PATH}",
                                    data={"grant_type": JWT_BEARER, "assertion": assertion})
            body = _oauth_body(response)
            if response.status_code == 200 and body.get("access_token"):
                self._check_instance(body.get("instance_url"))
                return str(body["access_token"])
            error, description = str(body.get("error") or ""), str(body.get("error_description") or "")
            # HttpClient's retries (5xx, timeouts) may outlast the assertion: sign a new one, once.
            if attempt == 1 and description == "expired authorization code":
                continue
            break
        text = f"{error}: {description}" if error and description else error or description or response.text
        text = " ".join(text.replace(assertion, "[assertion]").split())[:200]  # one line, never the assertion
        raise FatalError(f"salesforce JWT bearer token request to {self._login_url} answered "
                         f"{response.status_code}: {text}",
                         hint=self._hint(error, description))

    def _hint(self, error: str, description: str) -> str:
        if error == "invalid_client_id":
            return ("client_id must be the connected app's Consumer Key (App Manager → View → Manage Consumer "
                    "Details), in the org login_url signs in to")
        return _JWT_HINTS.get(description, "check client_id, username, private_key_path and login_url against the "
                                           "connected app (docs/sync.md, \"Salesforce authentication\")")

    def _assertion(self) -> str:
        claims = {"iss": self._client_id, "sub": self._username, "aud": self._login_url,
                  "exp": int(_clock()) + JWT_LIFETIME}
        return jwt.encode(claims, self._private_key(), algorithm="RS256", headers={"typ": None})  # {"alg":"RS256"}

    def _private_key(self) -> RSAPrivateKey:
        if self._key is not None:
            return self._key
        where = f"salesforce private_key_path {self._key_path}"
        try:
            data = Path(self._key_path).expanduser().read_bytes()
        except OSError as error:
            raise FatalError(f"{where}: cannot read it ({error.strerror or type(error).__name__})",
                             hint="point private_key_path at the PEM private key of the connected app's "
                                  "certificate") from None
        password = self._passphrase.encode("utf-8") if self._passphrase else None
        try:
            key = load_pem_private_key(data, password=password)
        except TypeError:  # encrypted without a passphrase, or a passphrase for a plain key
            if password is None:
                raise FatalError(f"{where}: the key is encrypted and no passphrase is set",
                                 hint="set `private_key_passphrase: ${SALESFORCE_PRIVATE_KEY_PASSPHRASE}` and "
                                      "export that variable") from None
            raise FatalError(f"{where}: the key is not encrypted but a passphrase is set",
                             hint="remove private_key_passphrase") from None
        except ValueError:  # the library's message says nothing about the key; ours neither
            raise FatalError(f"{where}: not a PEM private key, or the passphrase is wrong",
                             hint="use the PEM key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----) "
                                  "and check the variable private_key_passphrase reads") from None
        if not isinstance(key, RSAPrivateKey):
            raise FatalError(f"{where}: not an RSA key", hint="Salesforce verifies JWT bearer assertions with "
                                                              "RS256 only: create an RSA key and certificate")
        self._key = key
        return key

    def _check_instance(self, answered: Any) -> None:
        if isinstance(answered, str) and answered.rstrip("/") != self._instance_url:
            log.warning("salesforce: the token is for %s but instance_url is %s; API calls go to instance_url",
                        answered.rstrip("/"), self._instance_url)


def _oauth_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a token answer, or {} (a proxy's HTML page, an empty body)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class _ApiUsage:
    """The org's daily API usage from ``Sforce-Limit-Info``; stops the run near the limit so
    other integrations of the org keep some of the allocation."""

    def __init__(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self.used = self.total = 0
        self.seen = False
        self._lock = threading.Lock()

    def note(self, response: httpx.Response) -> None:
        found = _USAGE.search(response.headers.get("sforce-limit-info", ""))
        if not found:
            return
        used, total = int(found.group(1)), int(found.group(2))
        with self._lock:
            first = not self.seen
            # answers arrive out of order across threads: the highest count is the latest
            self.used, self.total, self.seen = max(self.used, used), total, True
        log.log(logging.INFO if first else logging.DEBUG, "salesforce api-usage=%s/%s", used, total)

    def check(self) -> None:
        with self._lock:
            used, total = self.used, self.total
        if total and used / total >= self.stop_at:
            log.warning("salesforce api-usage=%s/%s reached stop_at_api_usage %s: stopping", used, total, self.stop_at)
            raise FatalError(f"salesforce API usage {used}/{total} reached stop_at_api_usage ({self.stop_at:.0%}); "
                             f"stopped before sending more",
                             hint="the rows not sent stay pending for the next run; raise stop_at_api_usage to "
                                  "allow more of the org's daily allocation")


def _error(response: httpx.Response) -> tuple[str, str]:
    """(errorCode, message) of Salesforce's ``[{"message", "errorCode"}]`` error bodies."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}", response.text[:200]
    first = body[0] if isinstance(body, list) and body else body
    if isinstance(first, dict):
        return str(first.get("errorCode") or first.get("error") or ""), str(first.get("message") or "")
    return f"HTTP {response.status_code}", str(body)[:200]


def _reasons(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors) or "rejected without a reason"


def _datetime(value: datetime) -> str:
    """Salesforce's datetime format, in UTC (warehouse timestamps without a zone are UTC)."""
    value = value.astimezone(UTC) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return _datetime(value)
    return json_value(value)


def _csv_value(value: Any) -> str:
    if value is None:
        return CSV_NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        value = json_value(value)
    if isinstance(value, list | tuple):
        return ";".join(_csv_value(v) for v in value)  # multi-select picklists
    return str(value)

