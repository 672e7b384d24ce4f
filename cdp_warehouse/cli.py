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
@click.option("--format", "file_format", default="messages", show_default=True,
              type=click.Choice(("messages", "segment-warehouse", "rudderstack-warehouse")),
              help="messages: JSONL or Parquet of Segment-spec messages; segment-warehouse, "
                   "rudderstack-warehouse: Parquet or CSV export of one table of their warehouse schema")
@click.option("--table", default=None, metavar="NAME",
              help="with an export format: the table the files hold (tracks, identifies, pages, screens, "
                   "groups, aliases, or an event table like order_completed); default: each file's name")
@click.pass_context
@handled
def load(context: click.Context, files: tuple[Path, ...], source: str, file_format: str,
         table: str | None) -> None:
    """Land JSONL or Parquet files of Segment-spec messages, or Segment/RudderStack warehouse
    exports, in the landing table."""
    from cdp_warehouse.collect.loader import load_files
    from cdp_warehouse.errors import LoadError
    from cdp_warehouse.warehouses import connect

    if table is not None and file_format == "messages":
        raise LoadError("--table goes with an export format",
                        hint="add --format segment-warehouse or --format rudderstack-warehouse")
    project = _project(context)
    with connect(project) as warehouse, _progress() as progress:
        task = progress.add_task("loading", total=None)

        def on_progress(read: int) -> None:
            progress.update(task, completed=read, description=f"loading ({read:,} read)")

        if file_format == "messages":
            result = load_files(project, warehouse, list(files), source=source, on_progress=on_progress)
        else:
            from cdp_warehouse.collect.exports import load_exports

            result = load_exports(project, warehouse, list(files), layout=file_format, table=table,
                                  source=source, on_progress=on_progress)
    console.print(f"read {result.read:,} messages: [green]{result.inserted:,} landed[/], "
                  f"{result.duplicates:,} duplicates skipped, {result.rejected:,} rejected")
    if result.flagged or result.blocked:
        console.print(f"tracking plan: {result.flagged:,} landed with violations, {result.blocked:,} blocked "
                      f"(in {project.raw_schema}.quarantined_messages; `cdp plan replay` after fixing the plan)")
    for origin, reason in result.rejections[:5]:
        errors.print(f"  rejected {escape(origin)}: {escape(reason)}", highlight=False)
    if result.rejected:
        errors.print(f"  all rejections are in {project.raw_schema}.rejected_messages")


@main.command()
@click.option("--port", default=8088, show_default=True, type=click.IntRange(0, 65535), help="port to listen on")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: every interface)")
@click.option("--max-backlog", "max_backlog", default=None, metavar="SIZE",
              help="answer 429 past this much acknowledged data not yet in the warehouse "
                   "(e.g. 64MB; default: $CDP_SERVE_MAX_BACKLOG, else 256MB)")
@click.option("--flush-interval", "flush_interval", default=1.0, show_default=True, type=click.FloatRange(0.05, 5.0),
              help="seconds an event may wait in the write-ahead log before it is landed")
@click.pass_context
@handled
def serve(context: click.Context, port: int, host: str, max_backlog: str | None, flush_interval: float) -> None:
    """Segment-compatible HTTP collection API (POST /v1/track, /v1/batch, ...)."""
    import logging

    from cdp_warehouse.collect.server import parse_size
    from cdp_warehouse.collect.server import serve as run_server

    project = _project(context)
    logger = logging.getLogger("cdp_warehouse.collect")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    def ready(collector) -> None:
        console.print(f"cdp serve: listening on {collector.url} (sources: {', '.join(collector.sources)}); "
                      f"write-ahead log in {escape(str(collector.wal.directory))}", highlight=False)

    landed = run_server(project, host=host, port=port, flush_interval=flush_interval, on_ready=ready,
                        max_backlog=parse_size(max_backlog) if max_backlog else None)
    if not landed:
        errors.print("[yellow]warning:[/] some acknowledged events could not be landed before exit; they are "
                     "kept in the write-ahead log and land on the next `cdp serve`", highlight=False)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=errors, transient=True)


@main.command()
@click.option("--as-of", "as_of", default=None, help="ISO 8601 instant or date (default: $CDP_AS_OF, else now)")
@click.option("--select", "select", multiple=True, help="only these traits/audiences: --select a b, a,b or repeated")
@click.argument("more_selected", nargs=-1, metavar="")
@click.option("--full-refresh", is_flag=True, help="rebuild the identity graph from every message")
@click.option("--explain", "explain", is_flag=True,
              help="print each model's SQL and the warehouse's plan for it (EXPLAIN); nothing is kept")
@click.pass_context
@handled
def run(context: click.Context, as_of: str | None, select: tuple[str, ...], more_selected: tuple[str, ...],
        full_refresh: bool, explain: bool) -> None:
    """Compute profiles, traits and audiences in the warehouse."""
    from cdp_warehouse.runner import explain as explain_run
    from cdp_warehouse.runner import run as run_project
    from cdp_warehouse.warehouses import connect

    if more_selected and not select:
        raise CdpError(f"unexpected argument {more_selected[0]!r}", hint=f"to run only it: cdp run --select {more_selected[0]}")
    project = _project(context)
    instant = resolve_as_of(as_of)
    # `--select a b` (dbt style): click hands the names after the first to `more_selected`.
    names = [name for item in (*select, *more_selected) for name in item.split(",") if name] or None
    if explain:
        with connect(project) as warehouse:
            for model in explain_run(project, warehouse, instant, names):
                console.print(f"[bold]-- {escape(model.table)}[/]", highlight=False)
                click.echo(model.sql + ";")
                console.print(f"[dim]-- plan ({escape(warehouse.dialect)} {escape(warehouse.plan_name)})[/]", highlight=False)
                click.echo(model.plan + "\n")
        return
    with connect(project) as warehouse, _progress() as progress:
        task = progress.add_task("running", total=None)
        result = run_project(project, warehouse, instant, names, full_refresh=full_refresh,
                             on_step=lambda step: progress.update(task, description=f"building {step}"))
    console.print(f"as of {instant.isoformat()}: {result.profiles:,} profiles, {len(result.traits)} traits")
    if project.config.identity.stitch:
        how = "rebuilt from" if result.identity_rebuilt else "extended with"
        console.print(f"identity {how} {result.messages_stitched:,} messages ({result.rounds} rounds)")
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


@main.command()
@click.argument("audiences", nargs=-1)
@click.option("--to", "to", multiple=True, help="only these destinations (their names in cdp.yaml); repeatable")
@click.option("--dry-run", is_flag=True, help="print what would be sent; call nothing, change no state")
@click.option("--full-resync", is_flag=True, help="send every member again, not only what changed")
@click.pass_context
@handled
def sync(context: click.Context, audiences: tuple[str, ...], to: tuple[str, ...], dry_run: bool,
         full_resync: bool) -> None:
    """Send audience changes to their destinations (all audiences, or AUDIENCES)."""
    import json

    from cdp_warehouse.sync.engine import jobs
    from cdp_warehouse.sync.engine import sync as run_sync
    from cdp_warehouse.warehouses import connect

    project = _project(context)
    selected = jobs(project, audiences, to)
    if not selected:
        raise CdpError("nothing to sync", hint="add `sync:` entries to an audience, or check --to")
    with connect(project) as warehouse, _progress() as progress:
        tasks = {(job.audience, job.destination): progress.add_task(f"{job.audience} → {job.destination}", total=None)
                 for job in selected}

        def advance(job, done: int, total: int) -> None:
            progress.update(tasks[(job.audience, job.destination)], completed=done, total=total)

        outcomes = run_sync(project, warehouse, selected, dry_run=dry_run, full_resync=full_resync, on_progress=advance)
    if (context.find_root().obj or {}).get("verbose"):
        for o in outcomes:
            if o.exception is not None:
                raise o.exception
    if dry_run:
        table = Table("audience", "destination", "to add", "to change", "to remove", title="dry run: nothing sent")
        for o in outcomes:
            table.add_row(o.audience, o.destination, *(f"{o.planned.get(k, 0):,}" for k in ("added", "changed", "removed")))
        console.print(table)
        for o in outcomes:
            for request in o.samples:
                console.print(f"[bold]{escape(o.audience)} → {escape(o.destination)}[/]: {request.method} {escape(request.url)}"
                              f" ({len(request.rows)} rows)")
                console.print(escape(json.dumps(request.body, indent=2, default=str)[:2000]), highlight=False)
    else:
        table = Table("audience", "destination", "added", "changed", "removed", "failed", "requests", "status")
        for o in outcomes:
            table.add_row(o.audience, o.destination, f"{o.added:,}", f"{o.changed:,}", f"{o.removed:,}",
                          f"{o.failed:,}", f"{o.requests:,}", o.status)
        console.print(table)
    failed = [o for o in outcomes if o.status != "success"]
    for o in failed:
        reason = o.error or f"{o.failed:,} rows rejected (see sync_rejections; they are retried on the next run)"
        _fail(CdpError(f"{o.audience} → {o.destination}: {reason}", hint=o.hint))
    if failed:
        sys.exit(1)


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"


# ---------------------------------------------------------------- cdp plan (tracking plans)


def _tracking_plan(project):
    from cdp_warehouse.tracking.plan import load_plan

    plan = load_plan(project)
    if plan is None:
        raise CdpError("this project has no tracking plan",
                       hint="add `tracking_plan: tracking_plan.yaml` to cdp.yaml (`cdp plan infer --out "
                            "tracking_plan.yaml` drafts one)")
    return plan


@main.group("plan")
def plan_group() -> None:
    """Tracking plans: check landed data, draft a plan, replay quarantined messages."""


@plan_group.command("check")
@click.option("--since", default=None, help="only events with timestamp >= SINCE (ISO 8601 instant or date)")
@click.pass_context
@handled
def plan_check(context: click.Context, since: str | None) -> None:
    """Validate landed track/identify events against the plan; exit 1 on any violation."""
    from cdp_warehouse.asof import naive_utc, parse_as_of
    from cdp_warehouse.tracking.check import check_landed
    from cdp_warehouse.warehouses import connect

    project = _project(context)
    tracking_plan = _tracking_plan(project)
    instant = naive_utc(parse_as_of(since)) if since else None
    with connect(project) as warehouse:
        report = check_landed(project, warehouse, tracking_plan, instant)
    table = Table("event", "violation", "count", "paths", "example", title="tracking-plan violations")
    for group in report.sorted_groups():
        paths = ", ".join(f"{path} ({count:,})" if len(group.paths) > 1 else path
                          for path, count in group.paths.most_common(5))
        if len(group.paths) > 5:
            paths += f", … {len(group.paths) - 5} more"
        example = group.example
        shown = "" if example.violation_type == "missing_required" else f" = {_short(example.value)}"
        table.add_row(escape(str(group.event)), group.violation_type, f"{group.count:,}", escape(paths),
                      escape(f"{group.example_message_id}: {example.path}{shown}"))
    if report.groups:
        console.print(table)
    console.print(f"checked {report.checked:,} track/identify events in {report.seconds:.1f}s: "
                  f"{report.with_violations:,} with violations ({report.violations:,} violations)")
    if report.groups:
        sys.exit(1)


def _short(value, limit: int = 60) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@plan_group.command("infer")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the draft to OUT instead of printing it")
@click.option("--since", default=None, help="only events with timestamp >= SINCE")
@click.pass_context
@handled
def plan_infer(context: click.Context, out: Path | None, since: str | None) -> None:
    """Draft a tracking plan (YAML) from the landed events."""
    from cdp_warehouse.asof import naive_utc, parse_as_of
    from cdp_warehouse.tracking.infer import infer_plan, plan_yaml
    from cdp_warehouse.warehouses import connect

    project = _project(context)
    with connect(project) as warehouse:
        inferred = infer_plan(project, warehouse, naive_utc(parse_as_of(since)) if since else None)
    text = plan_yaml(inferred)
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {escape(str(out))}: {len(inferred.events)} events"
                  f"{', identify traits' if inferred.identify else ''} from {inferred.messages:,} messages")


@plan_group.command("replay")
@click.pass_context
@handled
def plan_replay(context: click.Context) -> None:
    """Re-validate quarantined messages; land those the current plan and modes let through."""
    from cdp_warehouse.tracking.replay import replay_quarantine
    from cdp_warehouse.warehouses import connect

    project = _project(context)
    tracking_plan = _tracking_plan(project)
    with connect(project) as warehouse:
        result = replay_quarantine(project, warehouse, tracking_plan)
    console.print(f"replayed {result.read:,} quarantined messages: [green]{result.landed:,} landed[/]"
                  f" ({result.flagged:,} flagged), {result.duplicates:,} already landed, "
                  f"{result.kept:,} still blocked")
    for (violation_type, path), count in result.reasons.most_common(5):
        errors.print(f"  {count:,} × {violation_type} at {escape(path)}", highlight=False)
