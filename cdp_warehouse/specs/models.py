"""The shape of the project files as frozen pydantic models (first stage of parsing).

These models check types and required keys only; names, SQL and cycles are checked when the
project is resolved (``resolve.py``). Every model forbids unknown keys, so a typo is an error.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, ValidationError

from cdp_warehouse.specs.cron import check_cron

SNAKE_CASE = r"^[a-z][a-z0-9_]*$"  # no leading underscore: internal columns use one
ValueType = Literal["text", "number", "boolean", "timestamp"]
Cron = Annotated[str, AfterValidator(check_cron)]


class Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- cdp.yaml


class DuckDBWarehouse(Spec):
    type: Literal["duckdb"]
    path: str = "data/warehouse.duckdb"
    memory_limit: str | None = None
    threads: int | None = Field(default=None, gt=0)


class PostgresWarehouse(Spec):
    type: Literal["postgres"]
    dsn: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None


class SnowflakeWarehouse(Spec):
    type: Literal["snowflake"]
    account: str
    user: str
    password: str | None = None
    private_key_path: str | None = None
    role: str | None = None
    database: str
    warehouse: str | None = None


class BigQueryWarehouse(Spec):
    type: Literal["bigquery"]
    project: str
    location: str | None = None
    credentials_path: str | None = None
    # The API's base URL, for the BigQuery emulator or a fake (anonymous credentials then).
    api_endpoint: str | None = None


Warehouse = Annotated[
    DuckDBWarehouse | PostgresWarehouse | SnowflakeWarehouse | BigQueryWarehouse,
    Field(discriminator="type"),
]


IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Schemas(Spec):
    raw: str = Field(default="raw", pattern=IDENTIFIER)
    models: str = Field(default="cdp", pattern=IDENTIFIER)


class CustomIdentifier(Spec):
    """An extra identifier read from a JSON path, e.g. ``{name: phone, path: context.traits.phone}``."""

    name: str = Field(pattern=SNAKE_CASE)
    path: str = Field(pattern=r"^(traits|context|properties)(\.[A-Za-z0-9_$-]+)+$")


class IdentityConfig(Spec):
    identifiers: list[Literal["user_id", "anonymous_id", "email"] | CustomIdentifier] = Field(
        default_factory=lambda: ["user_id", "email", "anonymous_id"]
    )
    limits: dict[str, int] = Field(default_factory=lambda: {"user_id": 1})
    # Stitch identifiers into profiles (docs/identity.md). Off by default until stitching
    # runs incrementally: a full rebuild costs ~30 s per 10M events.
    stitch: bool = False

    @model_validator(mode="after")
    def _supported_limits(self) -> IdentityConfig:
        """docs/identity.md "Limits": any identifier type but user_id takes a positive limit;
        user_id takes only 1 (joining user ids without an alias is refused)."""
        types = ["user_id", "email", "anonymous_id",
                 *[i.name for i in self.identifiers if isinstance(i, CustomIdentifier)]]
        problems: list[InitErrorDetails] = []
        for kind, value in self.limits.items():
            if kind not in types:
                message = f"unknown identifier type {kind!r} (this project's identifiers: {', '.join(types)})"
            elif kind == "user_id" and value != 1:
                message = ("only `limits: {user_id: 1}` is supported for user ids: they merge only through an "
                           "explicit alias (a higher limit would let a shared device merge accounts)")
            elif value < 1:
                message = f"a limit is a positive number of {kind} identifiers per profile, not {value}"
            else:
                continue
            # One problem per key, located at the key (file:line of `email: 0`, not of `identity:`).
            problems.append(InitErrorDetails(type="value_error", loc=("limits", kind), input=value,
                                             ctx={"error": ValueError(message)}))
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self


class BrazeDestination(Spec):
    type: Literal["braze"]
    rest_endpoint: str | None = None
    base_url: str | None = None
    api_key: str
    concurrency: int = Field(default=4, ge=1, le=64)  # requests in flight at once
    timeout: float = Field(default=30.0, gt=0)  # seconds per request before it is retried


class IntercomDestination(Spec):
    type: Literal["intercom"]
    base_url: str = "https://api.intercom.io"
    access_token: str
    concurrency: int = Field(default=4, ge=1, le=64)  # requests in flight at once
    timeout: float = Field(default=30.0, gt=0)  # seconds per request before it is retried


SALESFORCE_JWT_ONLY = ("username", "private_key_path", "private_key_passphrase", "login_url")


class SalesforceDestination(Spec):
    type: Literal["salesforce"]
    instance_url: str
    base_url: str | None = None
    # How the access token is obtained (docs/sync.md "Salesforce authentication"):
    # `client_credentials` (client_id + client_secret), or `jwt`, the OAuth 2.0 JWT bearer
    # flow (client_id + username + private_key_path, at login_url).
    auth: Literal["client_credentials", "jwt"] = "client_credentials"
    client_id: str  # the connected app's consumer key
    client_secret: str | None = None
    username: str | None = None  # jwt: the Salesforce user the sync acts as
    private_key_path: str | None = None  # jwt: PEM (PKCS#8 or PKCS#1) RSA key of the app's certificate
    private_key_passphrase: str | None = None  # jwt, for an encrypted key: ${VAR} only
    login_url: str | None = None  # jwt: token endpoint and audience; https://login.salesforce.com
    api_version: str = "v62.0"
    bulk_threshold: int = Field(default=10_000, ge=1)  # rows in a run from which Bulk API 2.0 is used
    stop_at_api_usage: float = Field(default=0.9, gt=0, le=1)  # share of the daily API allocation at which a run stops
    concurrency: int = Field(default=4, ge=1, le=64)  # requests (or Bulk jobs) in flight at once
    timeout: float = Field(default=30.0, gt=0)  # seconds per request before it is retried

    @model_validator(mode="after")
    def _auth_settings(self) -> SalesforceDestination:
        """Each auth flow's own keys, and none of the other's; located at the key (or, when
        missing, at the destination)."""
        found: dict[str, str] = {}
        if self.auth == "jwt":
            if self.username is None:
                found["username"] = ("auth: jwt needs `username`: the Salesforce username the sync acts as "
                                      "(the JWT's `sub`)")
            if self.private_key_path is None:
                found["private_key_path"] = ("auth: jwt needs `private_key_path`: the PEM private key whose "
                                             "certificate is uploaded to the connected app")
            if self.client_secret is not None:
                found["client_secret"] = "`client_secret` is not used by auth: jwt (the private key signs); remove it"
        else:
            if self.client_secret is None:
                found["client_secret"] = ("the client credentials flow needs `client_secret: "
                                          "${SALESFORCE_CLIENT_SECRET}`; or set `auth: jwt` for the JWT bearer flow")
            for name in SALESFORCE_JWT_ONLY:
                if getattr(self, name) is not None:
                    found[name] = f"`{name}` applies to `auth: jwt` only; add `auth: jwt` or remove it"
        if found:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type="value_error", loc=(name,), input=getattr(self, name),
                                 ctx={"error": ValueError(message)}) for name, message in found.items()])
        return self


class SlackDestination(Spec):
    type: Literal["slack"]
    webhook_url: str
    base_url: str | None = None
    timeout: float = Field(default=30.0, gt=0)


Destination = Annotated[
    BrazeDestination | IntercomDestination | SalesforceDestination | SlackDestination,
    Field(discriminator="type"),
]


class SourceSpec(Spec):
    write_key: str
    tracking_plan_mode: Literal["allow", "flag", "block"] | None = None


class ChecksConfig(Spec):
    """The Dagster asset checks (docs/dagster.md)."""

    # an audience whose size moved more than this share since its previous run fails its check
    max_size_change: float = Field(default=0.5, ge=0)
    # ... and its syncs do not run (a broken upstream must not mass-remove people downstream)
    block_sync_on_size_change: bool = False
    # landed events older than this fail the freshness check
    events_fresh_within: str = "24h"

    @field_validator("events_fresh_within")
    @classmethod
    def _window(cls, value: str) -> str:
        from cdp_warehouse.asof import parse_window  # noqa: PLC0415

        parse_window(value)
        return value


class ProjectConfig(Spec):
    """``cdp.yaml``. Destination and source values stay uninterpolated until they are used,
    so that `cdp run` works without any destination's credentials in the environment."""

    name: str
    warehouse: Warehouse
    schemas: Schemas = Schemas()
    identity: IdentityConfig = IdentityConfig()
    schedule: Cron = "0 * * * *"
    destinations: dict[str, Destination] = Field(default_factory=dict)
    tracking_plan: str | None = None
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
    checks: ChecksConfig = ChecksConfig()
    # Traits and audiences may also live in cdp.yaml itself (small projects).
    traits: list[dict] = Field(default_factory=list)
    audiences: list[dict] = Field(default_factory=list)


# ---------------------------------------------------------------- traits


class EventParams(Spec):
    event: str | list[str] = "*"
    where: str | None = None
    window: str | None = None


class PropertyParams(EventParams):
    property: str
    type: ValueType | None = None


class UniqueParams(PropertyParams):
    limit: int = Field(default=100, gt=0)


class IdentifyTraitParams(Spec):
    trait: str
    type: ValueType | None = None


class SqlParams(Spec):
    sql: str
    type: ValueType | None = None


# Kinds whose value type the analyst chooses with `type:` (the others have a fixed type).
TYPED_KINDS = ("first", "last", "most_frequent", "trait", "sql", "expression")

TRAIT_KINDS: dict[str, type[Spec]] = {
    "count": EventParams,
    "sum": PropertyParams,
    "avg": PropertyParams,
    "min": PropertyParams,
    "max": PropertyParams,
    "first": PropertyParams,
    "last": PropertyParams,
    "first_seen": EventParams,
    "last_seen": EventParams,
    "most_frequent": PropertyParams,
    "unique": UniqueParams,
    "count_distinct": PropertyParams,
    "days_active": EventParams,
    "trait": IdentifyTraitParams,
    "sql": SqlParams,
    "expression": SqlParams,
}


class TraitSpec(Spec):
    """One computed trait: a name and exactly one kind key holding that kind's parameters."""

    name: str = Field(pattern=SNAKE_CASE)
    description: str | None = None
    type: ValueType | None = None
    count: EventParams | None = None
    sum: PropertyParams | None = None
    avg: PropertyParams | None = None
    min: PropertyParams | None = None
    max: PropertyParams | None = None
    first: PropertyParams | None = None
    last: PropertyParams | None = None
    first_seen: EventParams | None = None
    last_seen: EventParams | None = None
    most_frequent: PropertyParams | None = None
    unique: UniqueParams | None = None
    count_distinct: PropertyParams | None = None
    days_active: EventParams | None = None
    trait: IdentifyTraitParams | None = None
    sql: SqlParams | None = None
    expression: SqlParams | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> TraitSpec:
        kinds = [kind for kind in TRAIT_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(
                f"a trait needs exactly one kind ({', '.join(TRAIT_KINDS)}); found {found}"
            )
        inner = getattr(getattr(self, kinds[0]), "type", None)
        if inner is not None and self.type is not None and inner != self.type:
            raise ValueError(f"`type` is given twice ({self.type} and {inner}); keep one")
        if (inner or self.type) is not None and kinds[0] not in TYPED_KINDS:
            raise ValueError(
                f"`type` applies to {', '.join(TYPED_KINDS)} traits; a {kinds[0]} trait has a fixed type"
            )
        return self

    @property
    def value_type(self) -> str | None:
        """``type`` as written on the trait or inside its kind's parameters."""
        return getattr(self.params, "type", None) or self.type

    @property
    def kind(self) -> str:
        return next(kind for kind in TRAIT_KINDS if getattr(self, kind) is not None)

    @property
    def params(self) -> Spec:
        return getattr(self, self.kind)


# ---------------------------------------------------------------- audiences


class MembershipSpec(Spec):
    attribute: str | None = None  # a boolean attribute (Braze)
    array: str | None = None  # an array attribute listing the audiences a person is in (Braze)
    tag: str | None = None  # a tag (Intercom)


class SyncSpec(Spec):
    """One `sync:` entry of an audience; its destination-specific keys are checked by the
    destination when it is used."""

    to: str
    mode: Literal["upsert", "mirror"] = "upsert"
    membership: MembershipSpec | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    object: str | None = None
    match: dict[str, str] | None = None
    channel: str | None = None
    on: Literal["entered", "exited", "both"] = "entered"
    identify_by: Literal["user_id", "email"] = "user_id"
    null_handling: Literal["skip", "clear"] = "skip"
    events: bool = False  # Braze: also send entered_audience / exited_audience custom events


class AudienceSpec(Spec):
    name: str = Field(pattern=SNAKE_CASE)
    title: str | None = None
    description: str | None = None
    where: str
    exclude: list[str] = Field(default_factory=list)
    splits: dict[str, int] | None = None
    schedule: Cron | None = None
    sync: list[SyncSpec] = Field(default_factory=list)


class AudienceFile(Spec):
    """One ``audiences/*.yaml`` file."""

    traits: list[dict] = Field(default_factory=list)
    audiences: list[dict] = Field(default_factory=list)
