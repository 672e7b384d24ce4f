"""Load a project folder: read the YAML, check its shape, resolve names and SQL.

Two stages, as dbt does: shape (pydantic models in ``models.py``) and resolution (references,
windows, SQL, cycles, here). Every problem is collected with file, line and key, and raised
once as a SpecError.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from sqlglot import exp
from sqlglot.errors import ParseError

from cdp_warehouse.asof import parse_window
from cdp_warehouse.compiler import fragments
from cdp_warehouse.errors import CdpError, SpecError, SpecProblem
from cdp_warehouse.specs.envvars import interpolate, missing
from cdp_warehouse.specs.models import AudienceFile, AudienceSpec, ProjectConfig, TraitSpec
from cdp_warehouse.specs.resolved import Location, ResolvedAudience, ResolvedProject, ResolvedTrait
from cdp_warehouse.specs.yaml_lines import LineDict, line_of, load_yaml

PROJECT_FILE = "cdp.yaml"
AUDIENCES_DIR = "audiences"
# cdp.yaml sections read only by the commands that use them (destinations, collection), so
# their environment variables need not be set for `cdp run`.
LAZY_SECTIONS = ("destinations", "sources")
SPLIT_TOTAL = 100
SYNC_FIELD_SOURCES = ("user_id", "email", "profile_id", "split", "in_audience")


def find_project_dir(flag: str | os.PathLike[str] | None = None) -> Path:
    """``--project``, else ``$CDP_PROJECT``, else the current directory."""
    chosen = flag or os.environ.get("CDP_PROJECT") or "."
    root = Path(chosen).resolve()
    if not (root / PROJECT_FILE).is_file():
        raise CdpError(
            f"no {PROJECT_FILE} in {root}",
            hint="run cdp inside a project folder, or pass --project DIR / set CDP_PROJECT",
        )
    return root


class _Problems:
    """Collects problems for one file, turning key paths into lines."""

    def __init__(self, file: str, raw: Any, collected: list[SpecProblem], text: str = "") -> None:
        self.file, self.raw, self.collected = file, raw, collected
        self.lines = text.splitlines()

    def add(self, path: tuple[Any, ...], message: str, hint: str | None = None, needle: str | None = None) -> None:
        line = line_of(self.raw, path)
        if needle and line:
            line = self._line_of_needle(line, needle)
        self.collected.append(SpecProblem(self.file, line, _key(path), message, hint))

    def _line_of_needle(self, line: int, needle: str) -> int:
        """In a multi-line value (``where: >``), the line that holds ``needle``."""
        first = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        indent = len(first) - len(first.lstrip())
        for number in range(line, len(self.lines) + 1):
            text = self.lines[number - 1]
            if number > line and text.strip() and len(text) - len(text.lstrip()) <= indent:
                break  # the value has ended
            if needle in text:
                return number
        return line

    def add_validation(self, prefix: tuple[Any, ...], error: ValidationError, model: type[BaseModel]) -> None:
        seen: set[str] = set()
        for item in error.errors():
            path = prefix + _existing_path(self.raw, prefix, item["loc"])
            message, hint = _explain(item, model)
            if (_key(path), message) in seen:
                continue
            seen.add((_key(path), message))
            self.add(path, message, hint)


def _existing_path(raw: Any, prefix: tuple[Any, ...], loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the steps pydantic adds that are not keys of the YAML (union tags like 'str')."""
    node = raw
    for step in prefix:
        node = node[step] if isinstance(node, (dict, list)) else None
    kept: list[Any] = []
    for index, step in enumerate(loc):
        if isinstance(node, dict) and step in node or isinstance(node, list) and isinstance(step, int) and step < len(node):
            kept.append(step)
            node = node[step]
        elif isinstance(node, dict) and index == len(loc) - 1:
            kept.append(step)  # a missing or unknown key: name it
        elif not isinstance(node, (dict, list)):
            break
    return tuple(kept)


def _key(path: tuple[Any, ...]) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


def _explain(item: dict[str, Any], model: type[BaseModel]) -> tuple[str, str | None]:
    kind, loc = item["type"], item["loc"]
    name = str(loc[-1]) if loc else ""
    if kind == "missing":
        return f"missing required key {name!r}", None
    if kind == "extra_forbidden":
        return f"unknown key {name!r}", fragments.did_you_mean(name, _field_names(model, loc[:-1]))
    message = item["msg"]
    message = message.removeprefix("Value error, ")
    return message, None


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for step in loc:
        field = getattr(current, "model_fields", {}).get(step)
        if field is None:
            break
        annotation = field.annotation
        current = next(
            (arg for arg in getattr(annotation, "__args__", (annotation,)) if hasattr(arg, "model_fields")),
            annotation,
        )
    return list(getattr(current, "model_fields", {}))


def load_project(
    root: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> ResolvedProject:
    """Parse and resolve the project at ``root``; raises SpecError listing every problem."""
    root_path = find_project_dir(root)
    environ = os.environ if environ is None else environ
    problems: list[SpecProblem] = []

    config, raw_items = _load_config(root_path, environ, problems)
    for path in sorted((root_path / AUDIENCES_DIR).glob("*.y*ml")):
        raw_items.extend(_load_audience_file(root_path, path, problems))

    traits: list[tuple[TraitSpec, Location, _Problems, tuple[Any, ...]]] = []
    audiences: list[tuple[AudienceSpec, Location, _Problems, tuple[Any, ...]]] = []
    for section, index, data, where in raw_items:
        model = TraitSpec if section == "traits" else AudienceSpec
        prefix = (section, index)
        if not isinstance(data, dict):
            where.add(prefix, f"each entry of {section} must be a mapping with a name")
            continue
        try:
            spec = model.model_validate(data)
        except ValidationError as error:
            where.add_validation(prefix, error, model)
            continue
        location = Location(where.file, line_of(where.raw, prefix))
        (traits if section == "traits" else audiences).append((spec, location, where, prefix))

    if config is None:
        raise SpecError(problems)
    # Imported here: the tracking package builds on this module (its problem collector).
    from cdp_warehouse.tracking.plan import read_plan

    read_plan(root_path, config, problems)
    project = _resolve(root_path, config, traits, audiences, problems)
    if problems:
        raise SpecError(problems)
    return project


def _relative(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _read(root: Path, path: Path, problems: list[SpecProblem]) -> Any:
    try:
        return load_yaml(path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        reason = getattr(error, "problem", None) or str(error)
        problems.append(
            SpecProblem(_relative(root, path), mark.line + 1 if mark else None, "", f"invalid YAML: {reason}")
        )
        return None


def _load_config(root: Path, environ: Mapping[str, str], problems: list[SpecProblem]):
    file = PROJECT_FILE
    raw = _read(root, root / file, problems)
    if raw is None:
        return None, []
    where = _Problems(file, raw, problems, (root / file).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        where.add((), "cdp.yaml must be a mapping with at least `name` and `warehouse`")
        return None, []
    resolved = LineDict()
    resolved.__dict__.update(raw.__dict__)
    unset = []
    for key, value in raw.items():
        if key in LAZY_SECTIONS or key in ("traits", "audiences"):
            resolved[key] = value
            continue
        unset += missing(value, environ, (key,))
        if not unset:
            resolved[key] = interpolate(value, environ)
    for path, name in unset:
        where.add(path, f"environment variable {name} is not set", f"set it, or give a default: ${{{name}:-value}}")
    if unset:
        return None, []
    try:
        config = ProjectConfig.model_validate(resolved)
    except ValidationError as error:
        where.add_validation((), error, ProjectConfig)
        return None, []
    items = [(section, index, data, where) for section in ("traits", "audiences")
             for index, data in enumerate(raw.get(section) or [])]
    return config, items


def _load_audience_file(root: Path, path: Path, problems: list[SpecProblem]):
    file = _relative(root, path)
    raw = _read(root, path, problems)
    if raw is None:
        return []
    where = _Problems(file, raw, problems, path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        where.add((), "an audiences file holds `traits:` and/or `audiences:` lists")
        return []
    try:
        AudienceFile.model_validate(raw)
    except ValidationError as error:
        where.add_validation((), error, AudienceFile)
        return []
    return [(section, index, data, where) for section in ("traits", "audiences")
            for index, data in enumerate(raw.get(section) or [])]


# ---------------------------------------------------------------- resolution


def _resolve(root, config, traits, audiences, problems) -> ResolvedProject:
    # One namespace: `--select NAME` and sync `fields` must not be ambiguous.
    names = _unique_names([*traits, *audiences], problems)
    trait_names = [name for name in names if name in {spec.name for spec, *_ in traits}]
    audience_names = [name for name in names if name in {spec.name for spec, *_ in audiences}]

    resolved_traits: dict[str, ResolvedTrait] = {}
    for spec, location, where, prefix in traits:
        if spec.name in fragments.PROFILE_COLUMNS:
            where.add(prefix + ("name",), f"trait name {spec.name!r} is a profile column", "choose another name")
        trait = _resolve_trait(spec, location, where, prefix, trait_names)
        if trait is not None and spec.name not in resolved_traits:
            resolved_traits[spec.name] = trait
    _check_trait_cycles(resolved_traits, traits, problems)

    resolved_audiences: dict[str, ResolvedAudience] = {}
    for spec, location, where, prefix in audiences:
        audience = _resolve_audience(spec, location, where, prefix, trait_names, audience_names, config)
        if audience is not None and spec.name not in resolved_audiences:
            resolved_audiences[spec.name] = audience
    _check_audience_cycles(resolved_audiences, audiences, problems)
    return ResolvedProject(root=root, config=config, traits=resolved_traits, audiences=resolved_audiences)


def _unique_names(items, problems: list[SpecProblem]) -> list[str]:
    first_seen: dict[str, Location] = {}
    for spec, location, where, prefix in items:
        what = "trait" if isinstance(spec, TraitSpec) else "audience"
        if spec.name in first_seen:
            earlier = first_seen[spec.name]
            where.add(prefix + ("name",), f"duplicate {what} name {spec.name!r}",
                      f"first defined at {earlier.file}:{earlier.line} (traits and audiences share names)")
        else:
            first_seen[spec.name] = location
    return list(first_seen)


def _parse(where: _Problems, path: tuple[Any, ...], sql: str) -> exp.Expression | None:
    try:
        return fragments.parse_fragment(sql)
    except ParseError as error:
        where.add(path, fragments.parse_error_message(error))
        return None


def _report(where: _Problems, path: tuple[Any, ...], found: list[fragments.FragmentProblem]) -> bool:
    for problem in found:
        where.add(path, problem.message, problem.hint, needle=problem.name)
    return not found


def _resolve_trait(spec: TraitSpec, location, where: _Problems, prefix, trait_names) -> ResolvedTrait | None:
    kind, params = spec.kind, spec.params
    base = prefix + (kind,)
    ok = True
    window = None
    if getattr(params, "window", None) is not None:
        try:
            window = parse_window(params.window)
        except ValueError as error:
            where.add(base + ("window",), str(error))
            ok = False
    parsed_where = None
    if getattr(params, "where", None):
        parsed_where = _parse(where, base + ("where",), params.where)
        ok = ok and parsed_where is not None
        if parsed_where is not None:
            ok = _report(where, base + ("where",), fragments.check_event_fragment(parsed_where, aggregate=False)) and ok
    if isinstance(getattr(params, "event", None), list) and not params.event:
        where.add(base + ("event",), "an empty list of events matches nothing", "use '*' for any event")
        ok = False
    parsed_sql, depends_on = None, ()
    if kind in ("sql", "expression"):
        parsed_sql = _parse(where, base + ("sql",), params.sql)
        if parsed_sql is None:
            return None
        if kind == "sql":
            ok = _report(where, base + ("sql",), fragments.check_event_fragment(parsed_sql, aggregate=True)) and ok
        else:
            found, depends_on = _check_expression(parsed_sql, spec.name, trait_names)
            ok = _report(where, base + ("sql",), found) and ok
    if not ok:
        return None
    return ResolvedTrait(spec=spec, location=location, window=window, where=parsed_where,
                         sql=parsed_sql, depends_on=depends_on)


def _check_profile_fragment(tree: exp.Expression, traits: list[str], hint: str) -> tuple[list, tuple[str, ...]]:
    """Problems of SQL over one profile's row (an `expression` trait, an audience rule):
    columns are traits or profile columns, no aggregate. Returns (problems, traits read)."""
    found: list[fragments.FragmentProblem] = []
    used: list[str] = []
    for column in tree.find_all(exp.Column):
        if column.find_ancestor(exp.Anonymous):
            continue  # arguments of events(...) and friends are literals, checked by the caller
        column_name = ".".join(fragments.column_parts(column))
        if column_name in traits:
            used.append(column_name)
        elif column_name not in fragments.PROFILE_COLUMNS:
            found.append(fragments.FragmentProblem(
                column_name, f"unknown trait {column_name!r}",
                fragments.did_you_mean(column_name, traits + list(fragments.PROFILE_COLUMNS))))
    if any(True for _ in tree.find_all(exp.AggFunc)):
        found.append(fragments.FragmentProblem("sql", "SQL over a profile's traits cannot aggregate", hint))
    return found, tuple(dict.fromkeys(used))


def _check_expression(tree: exp.Expression, name: str, trait_names: list[str]):
    found = fragments.unknown_functions(tree) + fragments.forbidden_constructs(tree)
    if any(".".join(fragments.column_parts(column)) == name for column in tree.find_all(exp.Column)):
        found.append(fragments.FragmentProblem(name, f"expression trait {name!r} refers to itself"))
    more, used = _check_profile_fragment(tree, [n for n in trait_names if n != name],
                                         "use a `sql` trait to aggregate events")
    return found + [p for p in more if p.name != name], used


def _check_trait_cycles(resolved: dict[str, ResolvedTrait], traits, problems) -> None:
    places = {spec.name: (where, prefix) for spec, _, where, prefix in traits}
    for cycle in _cycles({name: trait.depends_on for name, trait in resolved.items()}):
        where, prefix = places[cycle[0]]
        where.add(prefix + ("expression", "sql"), "expression traits form a cycle: " + " -> ".join(cycle))


def _cycles(graph: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Each cycle once, as a path that returns to its start."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state and nxt in graph:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    return found


def _literal_arg(call: exp.Anonymous, index: int) -> str | None:
    args = call.expressions
    if index < len(args) and isinstance(args[index], exp.Literal) and args[index].is_string:
        return args[index].this
    return None


def _resolve_audience(spec: AudienceSpec, location, where: _Problems, prefix, trait_names,
                      audience_names, config: ProjectConfig) -> ResolvedAudience | None:
    path = prefix + ("where",)
    tree = _parse(where, path, spec.where)
    if tree is None:
        return None
    found = fragments.unknown_functions(tree, fragments.AUDIENCE_FUNCTIONS) + fragments.forbidden_constructs(tree)
    audiences_used: list[str] = []
    for call in tree.find_all(exp.Anonymous):
        name = call.name.lower()
        args = call.expressions
        if name == "events":
            if not 1 <= len(args) <= 2 or any(_literal_arg(call, i) is None for i in range(len(args))):
                found.append(fragments.FragmentProblem("events", "events() takes 'EVENT' and an optional 'WINDOW' as strings",
                                                       "e.g. events('Report Generated', '30d')"))
            elif len(args) == 2:
                found.extend(_window_problem(_literal_arg(call, 1)))
        elif name == "events_where":
            if len(args) != 3 or any(_literal_arg(call, i) is None for i in range(3)):
                found.append(fragments.FragmentProblem("events_where",
                    "events_where() takes 'EVENT', 'WINDOW' and 'sql condition' as strings"))
            else:
                found.extend(_window_problem(_literal_arg(call, 1)))
                try:
                    condition = fragments.parse_fragment(_literal_arg(call, 2))
                    found.extend(fragments.check_event_fragment(condition, aggregate=False))
                except ParseError as error:
                    found.append(fragments.FragmentProblem("events_where", fragments.parse_error_message(error)))
        elif name == "in_audience":
            target = _literal_arg(call, 0) if len(args) == 1 else None
            if target is None:
                found.append(fragments.FragmentProblem("in_audience", "in_audience() takes one audience name as a string"))
            elif target == spec.name:
                found.append(fragments.FragmentProblem(target, f"audience {target!r} refers to itself"))
            elif target not in audience_names:
                found.append(fragments.FragmentProblem(target, f"unknown audience {target!r}",
                                                       fragments.did_you_mean(target, audience_names)))
            else:
                audiences_used.append(target)
    more, traits_used = _check_profile_fragment(tree, trait_names, "use events(...) or a trait")
    found += more
    ok = _report(where, path, found)

    for index, excluded in enumerate(spec.exclude):
        if excluded == spec.name:
            where.add(prefix + ("exclude", index), f"audience {excluded!r} excludes itself")
            ok = False
        elif excluded not in audience_names:
            where.add(prefix + ("exclude", index), f"unknown audience {excluded!r}",
                      fragments.did_you_mean(excluded, audience_names))
            ok = False
        else:
            audiences_used.append(excluded)
    if spec.splits is not None:
        if sum(spec.splits.values()) != SPLIT_TOTAL or any(v < 0 for v in spec.splits.values()):
            where.add(prefix + ("splits",), f"split percentages must be >= 0 and add up to 100 (found {sum(spec.splits.values())})")
            ok = False
    for index, sync in enumerate(spec.sync):
        sync_path = prefix + ("sync", index)
        if sync.to not in config.destinations:
            where.add(sync_path + ("to",), f"unknown destination {sync.to!r}",
                      fragments.did_you_mean(sync.to, list(config.destinations)) or "declare it under `destinations` in cdp.yaml")
            ok = False
        else:
            from cdp_warehouse.sync.destinations import DESTINATIONS  # noqa: PLC0415 (import cycle)

            destination = DESTINATIONS.get(config.destinations[sync.to].type)
            for key, message in destination.check(sync) if destination else []:
                where.add(sync_path + key, message)
                ok = False
        for target, source in sync.fields.items():
            if source not in trait_names and source not in SYNC_FIELD_SOURCES:
                where.add(sync_path + ("fields", target), f"unknown trait {source!r}",
                          fragments.did_you_mean(source, trait_names + list(SYNC_FIELD_SOURCES)))
                ok = False
    if not ok:
        return None
    return ResolvedAudience(spec=spec, location=location, where=tree,
                            traits_used=tuple(dict.fromkeys(traits_used)),
                            audiences_used=tuple(dict.fromkeys(audiences_used)))


def _window_problem(text: str | None) -> list[fragments.FragmentProblem]:
    try:
        parse_window(text)
    except ValueError as error:
        return [fragments.FragmentProblem(str(text), str(error))]
    return []


def _check_audience_cycles(resolved: dict[str, ResolvedAudience], audiences, problems) -> None:
    places = {spec.name: (where, prefix) for spec, _, where, prefix in audiences}
    for cycle in _cycles({name: a.audiences_used for name, a in resolved.items()}):
        where, prefix = places[cycle[0]]
        where.add(prefix + ("where",), "in_audience/exclude form a cycle: " + " -> ".join(cycle))
