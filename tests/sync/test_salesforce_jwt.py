"""Salesforce with `auth: jwt` (OAuth 2.0 JWT bearer flow): the sync signs an assertion with
the connected app's private key, the fake verifies it for real (RS256 against the uploaded
certificate, iss/sub/aud/exp), and every refusal becomes one line with a hint; a session that
expires mid-sync is replaced with a token from a new assertion; neither the key nor an
assertion is ever logged or shown. Keys are generated here, over real HTTP on loopback."""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cdp_warehouse.specs import load_project
from cdp_warehouse.sync.changes import FatalError
from cdp_warehouse.sync.destinations import salesforce as salesforce_module
from cdp_warehouse.sync.destinations.salesforce import _JwtBearer
from cdp_warehouse.sync.engine import SyncOutcome, jobs, sync
from tests.conftest import write_project
from tests.fakes import Fault
from tests.fakes.salesforce import JWT_BEARER, JWT_USER, TOKEN_PATH, ConnectedAppKey, FakeSalesforce
from tests.specs.test_validation import CDP_WITH_DESTINATIONS, one, problems
from tests.sync.conftest import Synced
from tests.sync.test_salesforce import api_calls, contact, members, users

PASSPHRASE = "correct horse battery staple"
JWT_SETTINGS = """\
    auth: jwt
    username: ${SALESFORCE_USERNAME}
    private_key_path: ${SALESFORCE_PRIVATE_KEY_PATH}
    login_url: ${SALESFORCE_LOGIN_URL}
"""


def use_jwt(s: Synced, key_file: Path, *, passphrase: bool = False, **settings: str) -> dict[str, str]:
    """Switch the salesforce destination of cdp.yaml to `auth: jwt`; the environment it needs."""
    path = s.ws.project.root / "cdp.yaml"
    extra = JWT_SETTINGS + ("    private_key_passphrase: ${SALESFORCE_PRIVATE_KEY_PASSPHRASE}\n" if passphrase else "")
    extra += "".join(f"    {name}: {value}\n" for name, value in settings.items())
    path.write_text(path.read_text().replace("    client_secret: ${SALESFORCE_CLIENT_SECRET}\n", extra))
    s.ws.project = load_project(s.ws.project.root, environ={})
    environ = {name: value for name, value in s.environ.items() if name != "SALESFORCE_CLIENT_SECRET"}
    return {**environ, "SALESFORCE_USERNAME": JWT_USER, "SALESFORCE_PRIVATE_KEY_PATH": str(key_file),
            "SALESFORCE_LOGIN_URL": s.salesforce.url, **({"SALESFORCE_PRIVATE_KEY_PASSPHRASE": PASSPHRASE}
                                                           if passphrase else {})}


def run(s: Synced, environ: dict[str, str]) -> SyncOutcome:
    project = s.ws.project
    [outcome] = sync(project, s.ws.warehouse, jobs(project, ["active"], ["salesforce"]), environ=environ)
    return outcome


def key_file(tmp_path: Path, key: ConnectedAppKey, kind: str = "pkcs8", passphrase: str | None = None) -> Path:
    path = tmp_path / f"{kind}{'-encrypted' if passphrase else ''}.pem"
    path.write_bytes(key.pem(kind, passphrase))
    return path


def token_requests(s: Synced) -> list:
    return [r for r in s.salesforce.requests if r.path == TOKEN_PATH]


# ------------------------------------------------------------------------------ success
@pytest.mark.parametrize(("kind", "encrypted"), [("pkcs8", False), ("pkcs1", True)])
def test_a_sync_with_jwt_auth_signs_an_assertion_and_upserts(synced, app_key, tmp_path, kind, encrypted):
    s = synced(salesforce=FakeSalesforce(jwt_certificate=app_key.certificate))
    environ = use_jwt(s, key_file(tmp_path, app_key, kind, PASSPHRASE if encrypted else None), passphrase=encrypted)
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    outcome = run(s, environ)
    assert (outcome.added, outcome.status, outcome.requests) == (2, "success", 2)  # token + 1 Collections call
    assert contact(s, "u2") == {"External_Id__c": "u2", "LastName": "u2", "Active__c": True, "Plan__c": "pro",
                                "Reports__c": 1}
    [request] = token_requests(s)
    assert request.path == TOKEN_PATH and request.status == 200
    assert parse_qs(request.raw.decode())["grant_type"] == [JWT_BEARER]  # and no client_secret
    assert set(parse_qs(request.raw.decode())) == {"grant_type", "assertion"}
    [signed] = s.salesforce.assertions()
    assert jwt.get_unverified_header(signed) == {"alg": "RS256"}
    claims = jwt.decode(signed, app_key.private_key.public_key(), algorithms=["RS256"], audience=s.salesforce.url)
    assert {k: claims[k] for k in ("iss", "sub", "aud")} == {"iss": s.salesforce.client_id, "sub": JWT_USER,
                                                             "aud": s.salesforce.url}
    assert 0 < claims["exp"] - time.time() <= 180  # Salesforce: within 3 minutes
    assert set(claims) == {"iss", "sub", "aud", "exp"}


def test_an_expired_session_mid_sync_gets_a_token_from_a_new_assertion(synced, app_key, tmp_path, monkeypatch):
    offsets = itertools.count(0, 5)  # each assertion is signed 5 s after the previous one
    monkeypatch.setattr(salesforce_module, "_clock", lambda: time.time() + next(offsets))
    s = synced(salesforce=FakeSalesforce(jwt_certificate=app_key.certificate, token_ttl_requests=2))
    environ = use_jwt(s, key_file(tmp_path, app_key), concurrency="1")
    s.ws.land(*members(*users(450)))  # three Collections requests
    s.ws.run()
    outcome = run(s, environ)
    assert (outcome.added, outcome.status) == (450, "success")
    assert [r.status for r in api_calls(s)] == [200, 200, 401, 200]
    assert [r.status for r in token_requests(s)] == [200, 200] and s.salesforce.tokens_issued == 2
    first, second = s.salesforce.assertions()
    assert first != second
    assert jwt.decode(second, options={"verify_signature": False})["exp"] > \
        jwt.decode(first, options={"verify_signature": False})["exp"]
    assert len(s.salesforce.records("Contact")) == 450


def test_an_assertion_that_expired_in_transit_is_signed_again_once(synced, app_key, tmp_path):
    s = synced(salesforce=FakeSalesforce(jwt_certificate=app_key.certificate))
    environ = use_jwt(s, key_file(tmp_path, app_key))
    s.salesforce.inject(Fault(status=400, path=TOKEN_PATH, body={"error": "invalid_grant",
                                                                  "error_description": "expired authorization code"}))
    s.ws.land(*members("u1"))
    s.ws.run()
    assert run(s, environ).status == "success"
    assert [r.status for r in token_requests(s)] == [400, 200]


def test_a_run_with_nothing_to_send_reads_no_key_and_signs_nothing(synced, tmp_path):
    s = synced(salesforce=FakeSalesforce())
    environ = use_jwt(s, tmp_path / "does-not-exist.pem")
    s.ws.run()  # nobody is active
    assert run(s, environ).status == "success" and s.salesforce.requests == []


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("case", "description", "hint"), [
    ("wrong key", "invalid_grant: invalid assertion", "certificate uploaded to the connected app"),
    ("wrong audience", "invalid_grant: audience is invalid", "https://test.salesforce.com (sandbox)"),
    ("unknown user", "invalid_grant: user hasn't approved this consumer", "pre-authorize"),
    ("wrong client id", "invalid_client_id: client identifier invalid", "Consumer Key"),
])
def test_a_refused_assertion_fails_the_run_with_one_line_and_a_hint(synced, app_key, other_key, tmp_path, case,
                                                                    description, hint):
    fake = FakeSalesforce(jwt_certificate=app_key.certificate,
                          jwt_audience="https://test.salesforce.com" if case == "wrong audience" else None)
    s = synced(salesforce=fake)
    environ = use_jwt(s, key_file(tmp_path, other_key if case == "wrong key" else app_key))
    if case == "unknown user":
        environ["SALESFORCE_USERNAME"] = "someone.else@acme.example"
    if case == "wrong client id":
        environ["SALESFORCE_CLIENT_ID"] = "3MVG9-not-this-app"
    s.ws.land(*members("u1"))
    s.ws.run()
    outcome = run(s, environ)
    assert outcome.status == "failed" and "\n" not in outcome.error
    assert outcome.error == f"salesforce JWT bearer token request to {s.salesforce.url} answered 400: {description}"
    assert hint in outcome.hint
    assert api_calls(s) == [] and len(token_requests(s)) == 1  # no retry, no API call
    assert s.state("salesforce") == {}


@pytest.mark.parametrize(("setup", "message", "hint"), [
    (lambda key, path: None, "cannot read it", "PEM private key"),
    (lambda key, path: path.write_bytes(key.pem("pkcs8", PASSPHRASE)), "encrypted and no passphrase is set",
     "SALESFORCE_PRIVATE_KEY_PASSPHRASE"),
    (lambda key, path: path.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
     "not a PEM private key", "BEGIN PRIVATE KEY"),
])
def test_an_unusable_private_key_is_one_line_with_a_hint_and_nothing_is_sent(synced, app_key, tmp_path, setup,
                                                                             message, hint):
    s = synced(salesforce=FakeSalesforce(jwt_certificate=app_key.certificate))
    path = tmp_path / "key.pem"
    setup(app_key, path)
    environ = use_jwt(s, path)
    s.ws.land(*members("u1"))
    s.ws.run()
    outcome = run(s, environ)
    assert outcome.status == "failed" and outcome.error.startswith(f"salesforce private_key_path {path}: ")
    assert message in outcome.error and hint in outcome.hint
    assert s.salesforce.requests == []


def test_the_private_key_loads_from_every_pem_flavour_and_rejects_a_wrong_passphrase(app_key, tmp_path):
    def grant(path: Path, passphrase: str | None) -> _JwtBearer:
        return _JwtBearer("https://login.salesforce.com", "id", JWT_USER, str(path), passphrase, "https://x")

    for kind in ("pkcs8", "pkcs1"):
        for secret in (None, PASSPHRASE):
            path = key_file(tmp_path, app_key, kind, secret)
            assert grant(path, secret)._private_key().private_numbers() == app_key.private_key.private_numbers()
        with pytest.raises(FatalError, match="passphrase is wrong"):
            grant(key_file(tmp_path, app_key, kind, PASSPHRASE), "not it")._private_key()
        with pytest.raises(FatalError, match="not encrypted but a passphrase is set"):
            grant(key_file(tmp_path, app_key, kind), PASSPHRASE)._private_key()
    elliptic = tmp_path / "ec.pem"
    elliptic.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(FatalError, match="not an RSA key"):
        grant(elliptic, None)._private_key()


# ------------------------------------------------------------------------------ secrets
def test_neither_the_private_key_nor_an_assertion_is_ever_logged_or_shown(synced, app_key, other_key, tmp_path,
                                                                          caplog, capsys):
    s = synced(salesforce=FakeSalesforce(jwt_certificate=app_key.certificate, token_ttl_requests=1))
    good = key_file(tmp_path, app_key, "pkcs8", PASSPHRASE)
    environ = use_jwt(s, good, passphrase=True, concurrency="1")
    s.ws.land(*members(*users(250)))  # two Collections requests: a second token mid-sync
    s.ws.run()
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG):  # every logger: ours, httpx, httpcore
        ok = run(s, environ)
        s.ws.land(*members("late"))
        s.ws.run()
        stranger = tmp_path / "other.pem"
        stranger.write_bytes(other_key.pem("pkcs8", PASSPHRASE))
        bad = run(s, {**environ, "SALESFORCE_PRIVATE_KEY_PATH": str(stranger)})
        wrong = run(s, {**environ, "SALESFORCE_PRIVATE_KEY_PASSPHRASE": "not it"})
    assert (ok.status, bad.status, wrong.status) == ("success", "failed", "failed")
    assert len(s.salesforce.assertions()) == 3  # two accepted, one refused
    shown += [caplog.text, *capsys.readouterr()]
    shown += [f"{o.error} {o.hint}" for o in (ok, bad, wrong)]
    shown.append(str(s.ws.query("SELECT * FROM cdp.sync_runs")))
    shown.append(str(s.ws.query("SELECT * FROM cdp.sync_rejections")))
    text = "\n".join(shown)
    assert "JWT bearer token request" in text and "passphrase is wrong" in text  # the failures are in there
    assert PASSPHRASE not in text
    assert not any(signed in text for signed in s.salesforce.assertions())
    # not even a piece: no 16 characters in a row of a signature or of either key (both PEM flavours)
    secrets = [signed.rsplit(".", 1)[1] for signed in s.salesforce.assertions()]
    for key in (app_key, other_key):
        for kind in ("pkcs8", "pkcs1"):
            secrets += [line for line in key.pem(kind).decode().splitlines() if not line.startswith("-----")]
    pieces = {text[i:i + 16] for i in range(len(text) - 15)}
    leaked = [secret[:8] + "…" for secret in secrets
              if any(secret[i:i + 16] in pieces for i in range(len(secret) - 15))]
    assert leaked == []


# --------------------------------------------------------------------------- validation
CDP_JWT = CDP_WITH_DESTINATIONS + """\
  salesforce:
    type: salesforce
    instance_url: ${SALESFORCE_INSTANCE_URL}
    client_id: ${SALESFORCE_CLIENT_ID}
"""
AUDIENCE = """\
    audiences:
      - name: everyone
        where: user_id IS NOT NULL
    """


@pytest.mark.parametrize(("settings", "key", "line", "message"), [
    ("    auth: jwt\n    private_key_path: k.pem\n", "username", 12, "auth: jwt needs `username`"),
    ("    auth: jwt\n    username: a@b.c\n", "private_key_path", 12, "auth: jwt needs `private_key_path`"),
    ("    auth: jwt\n    username: a@b.c\n    private_key_path: k.pem\n    client_secret: ${S}\n",
     "client_secret", 19, "not used by auth: jwt"),
    ("    username: a@b.c\n    client_secret: ${S}\n", "username", 16, "add `auth: jwt` or remove it"),
    ("    client_secret: ${S}\n    login_url: https://test.salesforce.com\n", "login_url", 17,
     "applies to `auth: jwt` only"),
    ("    auth: saml\n    client_secret: ${S}\n", "auth", 16, "'client_credentials' or 'jwt'"),
])
def test_validate_names_file_line_and_key_of_a_jwt_setting_that_is_missing_or_misplaced(tmp_path, settings, key,
                                                                                           line, message):
    problem = one(problems(tmp_path, AUDIENCE, CDP_JWT + settings), f"destinations.salesforce.{key}")
    assert (problem.file, problem.line) == ("cdp.yaml", line) and message in problem.message


def test_a_complete_jwt_destination_validates_with_its_variables_unset(tmp_path):
    root = write_project(tmp_path / "project", AUDIENCE, CDP_JWT + JWT_SETTINGS)
    assert load_project(root, environ={}).config.destinations["salesforce"].auth == "jwt"
