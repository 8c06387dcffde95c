"""Commands that show what a run did: status, trace, logs, outputs, report, graph."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dockyard.backends.choice import LOCAL, choose
from dockyard.cli.app import backend_option, cli, file_option, open_store, out, pipeline_or_cwl
from dockyard.cwl.document import is_cwl
from dockyard.errors import InvalidInput, UnknownReference
from dockyard.lifecycles import Phase
from dockyard.planning.graph import InstanceId
from dockyard.report.render import dot, mermaid
from dockyard.report.sizing import step_sizing
from dockyard.report.summary import RunSummary, load_summary
from dockyard.spec import load_pipeline
from dockyard.state.rows import AttemptRow
from dockyard.state.store import Store
from dockyard.terminal import printable
from dockyard.units import format_memory, format_seconds


@cli.command()
@file_option
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--resources",
    is_flag=True,
    help="Per step: CPUs and memory asked, reserved and used (right-sizing).",
)
def status(file: str, run_id: str | None, as_json: bool, resources: bool) -> None:
    """The run's instances: state, attempts, duration."""
    with open_store(pipeline_or_cwl(file)) as store:
        summary = load_summary(store, run_id)
    if as_json:
        data = summary.to_json()
        data["steps"] = [sizing.to_json() for sizing in step_sizing(summary)]
        click.echo(json.dumps(data, indent=2))
        return
    if resources:
        _print_sizing(summary)
        return
    run = summary.run
    took = format_seconds(run.ended_at - run.started_at) if run.ended_at else "running"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts().items()))
    out.print(
        f"run [bold]{run.id}[/] of {escape(printable(run.pipeline))}: {run.state} ({took}; "
        f"{counts})",
        soft_wrap=True,
    )
    if run.params and run.params != "{}":
        values = sorted(json.loads(run.params).items())
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in values)
        out.print(Text(printable(f"params: {shown}")), soft_wrap=True)
    if summary.outages:
        out.print(_outage_line(summary), soft_wrap=True)
    table = Table(box=None, header_style="bold")
    columns = ("instance", "state", "attempts", "duration", "cached", "memory", "peak", "cpu")
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("reason")
    for inst in summary.instances:
        last = inst.attempts[-1] if inst.attempts else None
        table.add_row(
            Text(printable(inst.row.instance)),
            inst.row.state,
            str(len(inst.attempts)),
            format_seconds(inst.duration) if inst.duration is not None else "-",
            "yes" if inst.row.cached else "no",
            format_memory(last.memory) if last else "-",
            _peak(last),
            _cpu(last),
            Text(printable(inst.row.reason or "")),
        )
        if len(inst.attempts) > 1 or inst.row.state == Phase.FAILED:
            for attempt in inst.attempts:
                spent = (attempt.ended_at - attempt.started_at) if attempt.ended_at else None
                code = "-" if attempt.exit_code is None else str(attempt.exit_code)
                table.add_row(
                    Text(f"  attempt {attempt.number}", "dim"),
                    Text(attempt.state, "dim"),
                    Text(f"exit {code}", "dim"),
                    Text(format_seconds(spent) if spent is not None else "-", "dim"),
                    "",
                    Text(format_memory(attempt.memory), "dim"),
                    Text(_peak(attempt), "dim"),
                    Text(_cpu(attempt), "dim"),
                    Text(printable(attempt.reason or ""), "dim"),
                )
    out.print(table)


def _print_sizing(summary: RunSummary) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("step", "attempts", "cpus", "reserved", "used", "memory", "peak"):
        table.add_column(column, no_wrap=True, justify="left" if column == "step" else "right")
    table.add_column("note")
    for sizing in step_sizing(summary):
        table.add_row(
            Text(printable(sizing.step)),
            str(sizing.ran),
            "-" if sizing.cpus is None else f"{sizing.cpus:g}",
            "-" if sizing.reserved is None else f"{sizing.reserved:.2f}",
            "-" if sizing.used is None else f"{sizing.used:.2f}",
            "-" if sizing.memory is None else format_memory(sizing.memory),
            "-" if sizing.peak is None else format_memory(sizing.peak),
            "; ".join(sizing.notes),
        )
    out.print(table)


def _outage_line(summary: RunSummary) -> str:
    times = len(summary.outages)
    spans = [format_seconds(o.seconds) for o in summary.outages if o.seconds is not None]
    line = f"the container engine was away {times} time{'s' if times != 1 else ''}"
    if spans:
        line += f" ({', '.join(spans)})"
    if any(o.seconds is None for o in summary.outages):
        line += ", the last time until the run stopped"
    lost = summary.lost_attempts
    return line + (
        f"; {lost} attempt{'s were' if lost != 1 else ' was'} lost and rerun without using a retry"
        if lost
        else "; no attempt was lost"
    )


def _peak(attempt: AttemptRow | None) -> str:
    if attempt is None or attempt.peak_memory is None:
        return "-"
    return format_memory(attempt.peak_memory)


def _cpu(attempt: AttemptRow | None) -> str:
    if attempt is None or attempt.cpu_seconds is None:
        return "-"
    return format_seconds(attempt.cpu_seconds)


TRACE_COLUMNS = (
    "instance",
    "attempt",
    "state",
    "exit_code",
    "reason",
    "cached",
    "cpus",
    "memory",
    "started_at",
    "ended_at",
    "wall_seconds",
    "cpu_seconds",
    "peak_memory",
    "io_read",
    "io_write",
    "node",
)


@cli.command()
@file_option
@click.argument("run_id", required=False)
def trace(file: str, run_id: str | None) -> None:
    """One TSV row per attempt (and per cached instance), for scripts and spreadsheets."""
    with open_store(pipeline_or_cwl(file)) as store:
        summary = load_summary(store, run_id)
    click.echo("\t".join(TRACE_COLUMNS))
    for inst in summary.instances:
        if not inst.attempts:
            blank = [""] * (len(TRACE_COLUMNS) - 6)
            click.echo(
                "\t".join(
                    [
                        printable(inst.row.instance),
                        "",
                        inst.row.state,
                        "",
                        "",
                        "yes" if inst.row.cached else "no",
                        *blank,
                    ]
                )
            )
        for a in inst.attempts:
            wall = a.ended_at - a.started_at if a.ended_at is not None else None
            values = (
                inst.row.instance,
                a.number,
                a.state,
                a.exit_code,
                a.reason,
                "no",
                a.cpus,
                a.memory,
                a.started_at,
                a.ended_at,
                wall,
                a.cpu_seconds,
                a.peak_memory,
                a.io_read,
                a.io_write,
                a.node,
            )
            click.echo("\t".join("" if v is None else printable(str(v)) for v in values))


def _instance_args(args: tuple[str, ...]) -> tuple[str | None, InstanceId]:
    if len(args) == 1:
        return None, InstanceId.parse(args[0])
    if len(args) == 2:
        return args[0], InstanceId.parse(args[1])
    raise click.UsageError("expected [RUN] STEP[KEY]")


def _find_instance(store: Store, run_id: str, wanted: InstanceId) -> str:
    names = [row.instance for row in store.instances(run_id)]
    if str(wanted) in names:
        return str(wanted)
    keys = [n for n in names if InstanceId.parse(n).step == wanted.step]
    if keys:
        shown = ", ".join(keys[:8]) + (" …" if len(keys) > 8 else "")
        raise UnknownReference(
            f"{wanted} is not an instance of run {run_id}; step {wanted.step!r} has: {shown}"
        )
    raise UnknownReference(f"run {run_id} has no step {wanted.step!r}")


@cli.command()
@file_option
@click.argument("args", nargs=-1, required=True, metavar="[RUN] STEP[KEY]")
@click.option("--attempt", type=int, help="Which attempt (default: the last).")
def logs(file: str, args: tuple[str, ...], attempt: int | None) -> None:
    """Print an instance's logs (stdout and stderr)."""
    run_id, wanted = _instance_args(args)
    with open_store(pipeline_or_cwl(file)) as store:
        run = store.run(run_id)
        name = _find_instance(store, run.id, wanted)
        attempts = store.attempts(run.id, name)
    if not attempts:
        raise UnknownReference(f"{name} never ran in run {run.id} (it may have been cached)")
    chosen = (
        attempts[-1]
        if attempt is None
        else next((a for a in attempts if a.number == attempt), None)
    )
    if chosen is None:
        raise UnknownReference(f"{name} has no attempt {attempt} (it had {len(attempts)})")
    if chosen.log_path is None or chosen.ended_at is None:
        raise UnknownReference(f"no logs were kept for {name} attempt {chosen.number}")
    log = Path(chosen.log_path)
    # An attempt that printed nothing has no log file.
    sys.stdout.buffer.write(log.read_bytes() if log.exists() else b"")
    sys.stdout.flush()


@cli.command()
@file_option
@click.argument("args", nargs=-1, required=True, metavar="[RUN] STEP[KEY]")
@backend_option
def outputs(file: str, args: tuple[str, ...], backend: str | None) -> None:
    """Print the host directory that holds an instance's committed output.

    A run on a cluster (--backend swarm) keeps its outputs on the nodes: the folder printed
    is then a copy on this machine, fetched from a node that keeps it and checked."""
    run_id, wanted = _instance_args(args)
    pf = pipeline_or_cwl(file)
    with open_store(pf) as store:
        run = store.run(run_id)
        name = _find_instance(store, run.id, wanted)
        row = next(r for r in store.instances(run.id) if r.instance == name)
        path = store.output_path(row.output) if row.output else None
    if path is None:
        raise UnknownReference(
            f"{name} has no committed output in run {run.id} (its state is {row.state})"
        )
    chosen = choose(backend)
    if chosen is not LOCAL and row.output:
        runtime = chosen.runtime()
        try:
            where = chosen.outputs(pf, runtime).locate(row.output)
        except FileNotFoundError as exc:
            raise UnknownReference(f"{name}: {exc.strerror or exc}") from None
        finally:
            runtime.close()
        path = str(where)
    click.echo(path)


@cli.command()
@file_option
@click.argument("run_id", required=False)
@click.option(
    "-o",
    "--output",
    "output",
    default="report.html",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the HTML page.",
)
def report(file: str, run_id: str | None, output: str) -> None:
    """Write the run report: graph, timeline, resources, failures (one HTML file)."""
    from dockyard.report import html as reports

    pf = pipeline_or_cwl(file)
    with open_store(pf) as store:
        summary = load_summary(store, run_id)
    page = reports.render(summary, pf.pipeline, lambda a: reports.tail(a.log_path))
    Path(output).write_text(page, encoding="utf-8")
    click.echo(f"wrote {output} (run {summary.run.id})")


@cli.command()
@file_option
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(file: str, fmt: str) -> None:
    """Print the pipeline's DAG as Mermaid or DOT text."""
    if is_cwl(file):
        raise InvalidInput(
            f"{file}: `graph` draws pipeline files; for a CWL document use "
            "`cwltool --print-dot` (its runs' instances are in `dockyard report`)"
        )
    pf = load_pipeline(file, checked=False)  # (steps, not what a run would read)
    click.echo(mermaid(pf) if fmt == "mermaid" else dot(pf))
