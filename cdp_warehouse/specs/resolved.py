"""The resolved project: typed specs plus their parsed SQL, ready for the compiler."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from cdp_warehouse.asof import Window
from cdp_warehouse.specs.models import AudienceSpec, ProjectConfig, TraitSpec


@dataclass(frozen=True)
class Location:
    file: str
    line: int | None


@dataclass(frozen=True)
class ResolvedTrait:
    spec: TraitSpec
    location: Location
    window: Window | None = None
    where: exp.Expression | None = None  # parsed `where` (event-level kinds)
    sql: exp.Expression | None = None  # parsed `sql` (sql and expression kinds)
    depends_on: tuple[str, ...] = ()  # traits an expression reads

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def value_type(self) -> str | None:
        return self.spec.value_type


@dataclass(frozen=True)
class ResolvedAudience:
    spec: AudienceSpec
    location: Location
    where: exp.Expression
    traits_used: tuple[str, ...] = ()
    audiences_used: tuple[str, ...] = ()  # in_audience(...) and exclude

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class ResolvedProject:
    root: Path
    config: ProjectConfig
    traits: dict[str, ResolvedTrait] = field(default_factory=dict)
    audiences: dict[str, ResolvedAudience] = field(default_factory=dict)

    @property
    def raw_schema(self) -> str:
        return self.config.schemas.raw

    @property
    def models_schema(self) -> str:
        return self.config.schemas.models

    def path(self, relative: str) -> Path:
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else self.root / candidate
