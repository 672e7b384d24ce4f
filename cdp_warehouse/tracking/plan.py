"""Read the project's tracking plan, report its problems like any other spec file, and pick
the enforcement mode of a source.

``load_project`` calls :func:`read_plan` so ``cdp validate`` lists plan problems with
``file:line``; the loaders call :func:`load_plan`, which reads the file again (cached on its
modification time) because ``ResolvedProject`` does not carry the plan.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import ValidationError

from cdp_warehouse.compiler.fragments import did_you_mean
from cdp_warehouse.errors import SpecError, SpecProblem
from cdp_warehouse.specs.loader import PROJECT_FILE, _key, _Problems, _read, _relative
from cdp_warehouse.specs.models import ProjectConfig
from cdp_warehouse.specs.resolved import ResolvedProject
from cdp_warehouse.specs.yaml_lines import line_of, load_yaml
from cdp_warehouse.tracking.models import Mode, TrackingPlan

# (path, mtime_ns, size) → plan: the collector lands a batch every few seconds and should not
# re-parse an unchanged file each time, yet an edited plan takes effect without a restart.
_CACHE: dict[Path, tuple[tuple[int, int], TrackingPlan]] = {}


def read_plan(root: Path, config: ProjectConfig, problems: list[SpecProblem]) -> TrackingPlan | None:
    """The plan named by ``config.tracking_plan`` (None when there is none or it is invalid);
    every problem found is appended to ``problems``."""
    _check_source_modes(root, config, problems)
    if config.tracking_plan is None:
        return None
    path = _plan_path(root, config.tracking_plan)
    if not path.is_file():
        problems.append(SpecProblem(PROJECT_FILE, _config_line(root, ("tracking_plan",)), "tracking_plan",
                                    f"tracking plan file {config.tracking_plan!r} not found",
                                    "create it (`cdp plan infer --out FILE` drafts one) or remove the key"))
        return None
    raw = _read(root, path, problems)
    file = _relative(root, path)
    where = _Problems(file, raw, problems, path.read_text(encoding="utf-8"))
    if raw is None:
        where.add((), "the tracking plan is empty", "start with `mode: flag` and `events:`")
        return None
    if not isinstance(raw, dict):
        where.add((), "a tracking plan is a mapping with `mode`, `events` and `identify`")
        return None
    try:
        return TrackingPlan.model_validate(raw)
    except ValidationError as error:
        first = len(problems)
        where.add_validation((), error, TrackingPlan)
        problems[first:] = _with_key_hints(problems[first:], error)
        return None


def load_plan(project: ResolvedProject) -> TrackingPlan | None:
    """The project's tracking plan, or None without ``tracking_plan``; raises SpecError when the
    file became invalid since the project was loaded."""
    if project.config.tracking_plan is None:
        return None
    path = _plan_path(project.root, project.config.tracking_plan)
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None
    cached = _CACHE.get(path)
    if stamp is not None and cached is not None and cached[0] == stamp:
        return cached[1]
    problems: list[SpecProblem] = []
    plan = read_plan(project.root, project.config, problems)
    if problems or plan is None:
        raise SpecError(problems or [SpecProblem(str(path), None, "", "tracking plan could not be read")])
    if stamp is not None:
        _CACHE[path] = (stamp, plan)
    return plan


def mode_for(project: ResolvedProject, plan: TrackingPlan | None, source: str) -> Mode:
    """The source's ``tracking_plan_mode``, else the plan's ``mode``; ``allow`` without a plan.

    A source name that is not under ``sources`` (``cdp load``'s default ``load``, a backfill
    name) gets the plan's mode: the plan is the project's default, and loading a file must not
    be a way around it.
    """
    if plan is None:
        return "allow"
    source_spec = project.config.sources.get(source)
    if source_spec is not None and source_spec.tracking_plan_mode is not None:
        return source_spec.tracking_plan_mode
    return plan.mode


def _with_key_hints(found: list[SpecProblem], error: ValidationError) -> list[SpecProblem]:
    """Add ``did you mean`` to unknown keys: the generic hint does not look inside the plan's
    dicts of events and properties."""
    hints = {}
    for item in error.errors():
        if item["type"] == "extra_forbidden":
            hints[_key(item["loc"])] = did_you_mean(str(item["loc"][-1]), _fields_at(item["loc"][:-1]))
    return [replace(problem, hint=hints[problem.key])
            if problem.hint is None and hints.get(problem.key) else problem for problem in found]


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` of a plan, stepping over event and property names."""
    model: Any = TrackingPlan
    steps = list(loc)
    while steps:
        step = steps.pop(0)
        field = model.model_fields.get(step) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        if get_origin(annotation) in (Union, UnionType):  # `X | None`
            annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
        if get_origin(annotation) is dict:
            model = get_args(annotation)[1]
            if steps:
                steps.pop(0)  # an event or property name
            else:
                return []
        else:
            model = annotation
    return list(getattr(model, "model_fields", {}))


def _plan_path(root: Path, relative: str) -> Path:
    candidate = Path(relative)
    return candidate if candidate.is_absolute() else root / candidate


def _config_line(root: Path, path: tuple[Any, ...]) -> int | None:
    # cdp.yaml has already parsed once; reading it again only to place an error is cheap.
    try:
        return line_of(load_yaml(root / PROJECT_FILE), path)
    except Exception:  # noqa: BLE001 - a line number is a nicety, never a reason to fail
        return None


def _check_source_modes(root: Path, config: ProjectConfig, problems: list[SpecProblem]) -> None:
    if config.tracking_plan is not None:
        return
    for name, source in config.sources.items():
        if source.tracking_plan_mode is not None:
            key = ("sources", name, "tracking_plan_mode")
            problems.append(SpecProblem(
                PROJECT_FILE, _config_line(root, key), "sources." + name + ".tracking_plan_mode",
                f"tracking_plan_mode {source.tracking_plan_mode!r} has no effect without a tracking plan",
                "set `tracking_plan: tracking_plan.yaml` in cdp.yaml, or remove tracking_plan_mode"))
