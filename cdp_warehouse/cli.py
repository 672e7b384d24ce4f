"""The `cdp` command: thin wrappers that parse arguments, call the library, and print."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cdp_warehouse.asof import resolve_as_of
from cdp_warehouse.compiler.render import DIALECTS
from cdp_warehouse.errors import CdpError, SpecError

# soft_wrap: a `file:line: key: message` line stays one line whatever the terminal width.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _fail(error: CdpError) -> None:
    errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
    if error.hint:
        errors.print(f"[dim]hint: {escape(error.hint)}[/]", highlight=False)


def handled(command):
    """One readable line plus a hint for expected errors; the traceback with --verbose."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        context = click.get_current_context()
        verbose = (context.find_root().obj or {}).get("verbose", False)
        try:
            return command(*args, **kwargs)
        except CdpError as error:
            if verbose:
                raise
            _fail(error)
            sys.exit(1)
        except Exception as error:  # a bug: still one line, traceback on request
            if verbose:
                raise
            errors.print(f"[bold red]error:[/] {type(error).__name__}: {escape(str(error))}", highlight=False)
            errors.print("[dim]hint: run again with --verbose for the traceback[/]")
            sys.exit(1)

    return wrapper


def _project(context: click.Context):
    from cdp_warehouse.specs import load_project

    return load_project((context.find_root().obj or {}).get("project"))


@click.group()
@click.option("--project", "project", type=click.Path(file_okay=False),
              help="project folder (default: $CDP_PROJECT, else the current directory)")
@click.option("--verbose", is_flag=True, help="show tracebacks")
@click.version_option(package_name="cdp_warehouse")
@click.pass_context
def main(context: click.Context, project: str | None, verbose: bool) -> None:
    """cdp: a warehouse-native customer data platform."""
    context.obj = {"project": project, "verbose": verbose}


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@handled
def init(directory: Path) -> None:
    """Scaffold a new project in DIRECTORY."""
    from cdp_warehouse.scaffold import init_project

    for path in init_project(directory):
        console.print(f"created {escape(str(path))}")
    console.print(f"next: cd {escape(str(directory))} && cdp validate && cdp run")


@main.command()
@click.pass_context
@handled
def validate(context: click.Context) -> None:
    """Parse and check every YAML file; exit 1 on any error."""
    try:
        project = _project(context)
    except SpecError as error:
        for problem in error.problems:
            errors.print(f"[red]{escape(str(problem))}[/]", highlight=False)
        errors.print(f"[bold red]{len(error.problems)} error(s)[/]")
        sys.exit(1)
    console.print(
        f"[green]ok[/]: {project.config.name}: {len(project.traits)} traits, "
        f"{len(project.audiences)} audiences, {len(project.config.destinations)} destinations"
    )


@main.command()
@click.option("--dialect", type=click.Choice(DIALECTS), default=None,
              help="target SQL dialect (default: the project's warehouse type)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write files under OUT/<dialect>/ instead of printing")
@click.option("--as-of", "as_of", default=None, help="pin as-of in the SQL (default: the warehouse's current time)")
@click.pass_context
@handled
def compile(context: click.Context, dialect: str | None, out: Path | None, as_of: str | None) -> None:
    """Print or write the SQL of every model."""
    from cdp_warehouse.asof import pinned_as_of
    from cdp_warehouse.compiler.plan import compile_project
    from cdp_warehouse.compiler.render import render_plan, write_plan

    project = _project(context)
    dialect = dialect or project.config.warehouse.type
    plan = compile_project(project, pinned_as_of(as_of), dialect=dialect)
    if out is None:
        for name, text in render_plan(plan, project.models_schema).items():
            console.print(f"[dim]-- {name}[/]")
            click.echo(text)
        return
    for path in write_plan(plan, project.models_schema, out):
        console.print(f"wrote {escape(str(path))}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", default="load", show_default=True, help="value of the `source` column")
@click.pass_context
@handled
def load(context: click.Context, files: tuple[Path, ...], source: str) -> None:
    """Land JSONL or Parquet files of Segment-spec messages in the landing table."""
    from cdp_warehouse.collect.loader import load_files
    from cdp_warehouse.warehouses import connect

    project = _project(context)
    with connect(project) as warehouse, _progress() as progress:
        task = progress.add_task("loading", total=None)
        result = load_files(project, warehouse, list(files), source=source,
                            on_progress=lambda read: progress.update(task, completed=read,
                                                                     description=f"loading ({read:,} read)"))
    console.print(f"read {result.read:,} messages: [green]{result.inserted:,} landed[/], "
                  f"{result.duplicates:,} duplicates skipped, {result.rejected:,} rejected")
    for origin, reason in result.rejections[:5]:
        errors.print(f"  rejected {escape(origin)}: {escape(reason)}", highlight=False)
    if result.rejected:
        errors.print(f"  all rejections are in {project.raw_schema}.rejected_messages")


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=errors, transient=True)


@main.command()
@click.option("--as-of", "as_of", default=None, help="ISO 8601 instant or date (default: $CDP_AS_OF, else now)")
@click.option("--select", "select", multiple=True, help="only these traits/audiences: --select a b, a,b or repeated")
@click.argument("more_selected", nargs=-1, metavar="")
@click.pass_context
@handled
def run(context: click.Context, as_of: str | None, select: tuple[str, ...], more_selected: tuple[str, ...]) -> None:
    """Compute profiles, traits and audiences in the warehouse."""
    from cdp_warehouse.runner import run as run_project
    from cdp_warehouse.warehouses import connect

    if more_selected and not select:
        raise CdpError(f"unexpected argument {more_selected[0]!r}", hint=f"to run only it: cdp run --select {more_selected[0]}")
    project = _project(context)
    instant = resolve_as_of(as_of)
    # `--select a b` (dbt style): click hands the names after the first to `more_selected`.
    names = [name for item in (*select, *more_selected) for name in item.split(",") if name] or None
    with connect(project) as warehouse, _progress() as progress:
        task = progress.add_task("running", total=None)
        result = run_project(project, warehouse, instant, names,
                             on_step=lambda step: progress.update(task, description=f"building {step}"))
    console.print(f"as of {instant.isoformat()}: {result.profiles:,} profiles, {len(result.traits)} traits")
    table = Table("audience", "members", "entered", "exited")
    for name, size in result.audience_sizes.items():
        table.add_row(name, f"{size:,}", str(result.entered.get(name, "-")), str(result.exited.get(name, "-")))
    if result.audience_sizes:
        console.print(table)
    if result.history_skipped:
        errors.print("history kept (it is newer than this as-of): " + ", ".join(result.history_skipped))


@main.command()
@click.argument("audience")
@click.option("--as-of", "as_of", default=None, help="ISO 8601 instant or date (default: $CDP_AS_OF, else now)")
@click.pass_context
@handled
def preview(context: click.Context, audience: str, as_of: str | None) -> None:
    """Size, sample members and trait breakdown of AUDIENCE (nothing is stored)."""
    from cdp_warehouse.preview import preview as preview_audience
    from cdp_warehouse.warehouses import connect

    project = _project(context)
    with connect(project) as warehouse:
        result = preview_audience(project, warehouse, audience, resolve_as_of(as_of))
    spec = project.audiences[audience].spec
    console.print(f"[bold]{escape(spec.title or audience)}[/] — {escape(spec.description or spec.where.strip())}")
    console.print(f"as of {result.as_of.isoformat()}: [bold]{result.size:,}[/] members "
                  f"of {result.profiles:,} profiles ({result.share:.1%})")
    if result.splits:
        console.print("splits: " + ", ".join(f"{name} {count:,}" for name, count in sorted(result.splits.items())))
    sample = Table(*result.sample_columns, title=f"sample of {len(result.sample)} members")
    for row in result.sample:
        sample.add_row(*("" if value is None else escape(str(value)) for value in row))
    console.print(sample)
    for breakdown in result.breakdowns:
        if breakdown.numeric:
            table = Table("", "members", "all profiles", title=breakdown.trait)
            for label, members, everyone in breakdown.rows:
                table.add_row(label, _number(members), _number(everyone))
        else:
            table = Table("value", "members", "share", title=breakdown.trait)
            for value, count, share in breakdown.rows:
                table.add_row("(null)" if value is None else escape(str(value)), f"{count:,}", f"{share:.1%}")
        console.print(table)


@main.command()
@click.argument("identifier")
@click.pass_context
@handled
def profile(context: click.Context, identifier: str) -> None:
    """One person as the last run stitched them: identifiers, traits, audiences, latest events."""
    from cdp_warehouse.lookup import profile_card
    from cdp_warehouse.warehouses import connect

    project = _project(context)
    with connect(project) as warehouse:
        card = profile_card(project, warehouse, identifier)
    console.print(f"[bold]profile {escape(card.profile_id)}[/]")
    identifiers = Table("type", "identifier", title="identifiers")
    for kind, value in card.identifiers:
        identifiers.add_row(kind, escape(value))
    console.print(identifiers)
    facts = Table("", "value", title="profile and traits")
    for name, value in {**card.profile, **card.traits}.items():
        if name != "profile_id":
            facts.add_row(name, "" if value is None else escape(str(value)))
    console.print(facts)
    audiences = Table("audience", "split", "entered", "exited", title="audience memberships")
    for row in card.memberships:
        audiences.add_row(row["audience"], row["split"] or "", str(row["entered_at"]), str(row["exited_at"] or "member"))
    console.print(audiences)
    events = Table("timestamp", "type", "event", "user_id", "anonymous_id", title=f"latest {len(card.events)} events")
    for row in card.events:
        events.add_row(str(row["timestamp"]), row["type"], escape(row["event"] or ""), escape(row["user_id"] or ""),
                       escape(row["anonymous_id"] or ""))
    console.print(events)


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
