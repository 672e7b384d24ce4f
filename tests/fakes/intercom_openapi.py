"""Intercom's official OpenAPI description (REST API 2.14), loaded once per process, and
the checks the fake Intercom runs with it on every request and every response.

The file is committed in ``intercom_openapi_spec/`` beside this module (MIT, from the public
Intercom-OpenAPI repository). Two things are patched in our in-memory copy, never in the file:

- it is loaded with ``Config(spec_validator_cls=None)``: the file fails strict spec validation
  on a path we do not use;
- ``POST /tags`` lists its four body shapes under ``oneOf``, but a plain ``{"name": ...}``
  matches several of them (they share optional keys), so every valid body would be refused;
  ``anyOf`` is what is meant.

Statuses the file does not describe for an operation (429 and 5xx everywhere, the 409 that
``POST /contacts`` answers for a duplicate — described upstream only in Intercom-OpenAPI
PR #543 — and the 400/404 that several operations answer) are checked against the shared
``error`` schema (``{"type": "error.list", "errors": [{"code", "message"}]}``).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import yaml
from openapi_core import Config, OpenAPI
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator

SPEC_FILE = "api.intercom.io-2.14.yaml"
# The fake stands in for the production host: requests are checked as if sent there.
PRODUCTION = "https://api.intercom.io"

_lock = threading.Lock()
_loaded: tuple[OpenAPI, OAS30Validator] | None = None


def spec_path() -> Path:
    """Where the description is: ``$INTERCOM_OPENAPI``, else the copy committed beside this
    module (Intercom's official file, MIT; a test needs no checkout of anything else)."""
    if os.environ.get("INTERCOM_OPENAPI"):
        return Path(os.environ["INTERCOM_OPENAPI"])
    return Path(__file__).resolve().parent / "intercom_openapi_spec" / SPEC_FILE


def _load() -> tuple[OpenAPI, OAS30Validator]:
    """The parsed description (0.8 s for 880 KB of YAML: once per process)."""
    global _loaded
    with _lock:
        if _loaded is None:
            with spec_path().open(encoding="utf-8") as handle:
                spec = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            body = spec["paths"]["/tags"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            body["anyOf"] = body.pop("oneOf")
            error = OAS30Validator(spec["components"]["schemas"]["error"])
            _loaded = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None)), error
        return _loaded


class Checker:
    """Validates one exchange at a time (openapi-core's validators share caches: one lock)."""

    _serial = threading.Lock()

    def __init__(self) -> None:
        self.api, self.error_validator = _load()

    def request_problem(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                        raw: bytes) -> tuple[int, str] | None:
        """``(status, why)`` when the request breaks the description — 404 for a path or
        operation it does not have, 400 for a bad parameter or body — else ``None``."""
        with self._serial:
            try:
                self.api.validate_request(_request(method, path, query, headers, raw))
            except (PathNotFound, OperationNotFound) as error:
                return 404, _explain(error)
            except Exception as error:  # noqa: BLE001 - every validation failure is a finding
                return 400, _explain(error)
        return None

    def response_problem(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                         raw: bytes, status: int, body: Any) -> str | None:
        """Why our answer breaks the description, or ``None``."""
        data = json.dumps(body).encode() if isinstance(body, dict | list) else (body or b"")
        if isinstance(data, str):
            data = data.encode()
        content_type = "application/json" if isinstance(body, dict | list) else "text/plain"
        with self._serial:
            try:
                self.api.validate_response(_request(method, path, query, headers, raw),
                                           MockResponse(data, status_code=status, content_type=content_type))
            except (PathNotFound, OperationNotFound):
                return None  # no such operation: the request was refused (and recorded) already
            except ResponseNotFound:
                if status < 400:
                    return f"status {status} is not described for {method} {path}"
                errors = sorted(self.error_validator.iter_errors(body), key=str)
                return f"error body off the `error` schema: {errors[0].message}" if errors else None
            except Exception as error:  # noqa: BLE001
                return _explain(error)
        return None


def _request(method: str, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes) -> MockRequest:
    return MockRequest(PRODUCTION, method.lower(), path, args=query, headers=headers, data=raw or None,
                       content_type=headers.get("content-type", "application/json").split(";")[0])


def _explain(error: Exception) -> str:
    """openapi-core nests the schema errors in ``__cause__``; the innermost says what is wrong."""
    parts = [str(error)]
    cause = error.__cause__
    while cause is not None:
        parts.append(str(cause))
        details = getattr(cause, "schema_errors", None)
        if details:
            parts.append("; ".join(getattr(d, "message", str(d)) for d in details))
        cause = cause.__cause__
    return " — ".join(dict.fromkeys(p for p in parts if p))
