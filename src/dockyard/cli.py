"""The ``dockyard`` command line (SPEC.md section 2).

Exit status: 0 success; 1 a step failed; 2 invalid input, nothing started;
3 the container engine could not be reached.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dockyard import __version__
from dockyard.errors import EXIT_INVALID, DockyardError, InvalidInput, UnknownReference
from dockyard.execution import Executor, RunOptions
from dockyard.graph import InstanceId
from dockyard.preflight import graph_of
from dockyard.progress import LiveProgress, PlainProgress
from dockyard.render import dot, mermaid
from dockyard.spec import DEFAULT_FILE, PipelineFile, load_pipeline
from dockyard.store import AttemptRow, Store
from dockyard.summary import RunSummary, load_summary
from dockyard.terminal import printable
from dockyard.units import format_memory, format_seconds, parse_memory
from dockyard.volumes import VolumeStore, check_ref, check_tag

F = TypeVar("F", bound=Callable[..., Any])
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def file_option(fn: F) -> F:
    return click.option(
        "-f",
        "--file",
        "file",
        default=DEFAULT_FILE,
        show_default=True,
        type=click.Path(dir_okay=False),
        help="The pipeline file.",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockyard")
def cli() -> None:
    """Run containerized data pipelines with stateful steps."""


@cli.command()
@file_option
def validate(file: str) -> None:
    """Check the pipeline file; report every problem with its line."""
    pf = load_pipeline(file)
    graph = graph_of(pf)
    steps = len(pf.pipeline.steps)
    out.print(
        f"{escape(printable(file))}: ok ({steps} step{'s' if steps != 1 else ''}, "
        f"{len(graph.order)} instance{'s' if len(graph.order) != 1 else ''})"
    )


@cli.command()
@file_option
@click.option("--no-cache", is_flag=True, help="Run every instance, even if a result exists.")
@click.option("--max-cpus", type=click.FloatRange(min=0.001), help="Use at most N CPUs.")
@click.option("--max-memory", help="Use at most this much memory (e.g. 4g).")
@click.option(
    "--wait-for-volumes",
    is_flag=True,
    help="Queue behind another run that is writing a volume this run uses (default: fail).",
)
@click.option(
    "--keep-going",
    is_flag=True,
    help="After a failure, keep running the instances that do not depend on it.",
)
def run(
    file: str,
    no_cache: bool,
    max_cpus: float | None,
    max_memory: str | None,
    wait_for_volumes: bool,
    keep_going: bool,
) -> None:
    """Run the pipeline to completion."""
    memory = None
    if max_memory is not None:
        try:
            memory = parse_memory(max_memory)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--max-memory") from None
    pf = load_pipeline(file)
    from dockyard.runtime.docker import DockerRuntime

    runtime = DockerRuntime()
    options = RunOptions(
        max_cpus=max_cpus,
        max_memory=memory,
        no_cache=no_cache,
        keep_going=keep_going,
        wait_for_volumes=wait_for_volumes,
    )
    live = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    reporter = LiveProgress(out) if live else PlainProgress(sys.stdout)
    with _store(pf) as store, _terminate_as_interrupt():
        executor = Executor(pf, runtime, store, options=options, reporter=reporter)
        try:
            run_id = executor.run()
        finally:
            reporter.close()
            runtime.close()
    click.echo(f"run {run_id} succeeded; see `dockyard status` and `dockyard outputs STEP`")


@cli.command()
@file_option
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Make them again even when they exist.")
def build(file: str, names: tuple[str, ...], force: bool) -> None:
    """Make the images of `images:` (all, or the NAMES given) that the engine lacks."""
    pf = load_pipeline(file)
    declared = pf.pipeline.images
    for name in names:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise UnknownReference(f"images: has no entry {name!r} (it has: {known})")
    from dockyard.images import make_images, source_of, tag_of
    from dockyard.runtime.docker import DockerRuntime

    wanted = list(dict.fromkeys(names)) or list(declared)
    runtime = DockerRuntime()
    try:
        with _terminate_as_interrupt():
            runtime.ping()
            made = make_images(  # (rich's console serialises the builders' notes)
                pf,
                [(n, True) for n in wanted],
                runtime,
                lambda m: err.print(Text(printable(m))),
                force=force,
            )
    finally:
        runtime.close()
    for name in wanted:
        click.echo(f"{name}\t{tag_of(pf, name, source_of(pf, declared[name]))}\t{made[name]}")


@cli.command()
@file_option
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(file: str, run_id: str | None, as_json: bool) -> None:
    """The run's instances: state, attempts, duration."""
    with _store(load_pipeline(file)) as store:
        summary = load_summary(store, run_id)
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
        return
    run = summary.run
    took = format_seconds(run.ended_at - run.started_at) if run.ended_at else "running"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts().items()))
    out.print(
        f"run [bold]{run.id}[/] of {escape(printable(run.pipeline))}: {run.state} ({took}; "
        f"{counts})",
        soft_wrap=True,
    )
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
        if len(inst.attempts) > 1 or inst.row.state == "failed":
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
)


@cli.command()
@file_option
@click.argument("run_id", required=False)
def trace(file: str, run_id: str | None) -> None:
    """One TSV row per attempt (and per cached instance), for scripts and spreadsheets."""
    with _store(load_pipeline(file)) as store:
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
    with _store(load_pipeline(file)) as store:
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
def outputs(file: str, args: tuple[str, ...]) -> None:
    """Print the host directory that holds an instance's committed output."""
    run_id, wanted = _instance_args(args)
    with _store(load_pipeline(file)) as store:
        run = store.run(run_id)
        name = _find_instance(store, run.id, wanted)
        row = next(r for r in store.instances(run.id) if r.instance == name)
        path = store.output_path(row.output) if row.output else None
    if path is None:
        raise UnknownReference(
            f"{name} has no committed output in run {run.id} (its state is {row.state})"
        )
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
    from dockyard import report as reports

    pf = load_pipeline(file)
    with _store(pf) as store:
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
    pf = load_pipeline(file)
    click.echo(mermaid(pf) if fmt == "mermaid" else dot(pf))


@cli.group()
def volume() -> None:
    """Named volumes (host-wide, under $DOCKYARD_HOME) and their snapshots."""


@volume.command("ls")
def volume_ls() -> None:
    """List the volumes."""
    table = Table(box=None, header_style="bold")
    for column in ("volume", "files", "size", "snapshots", "path"):
        table.add_column(column, no_wrap=column != "path")
    for info in VolumeStore().all():
        table.add_row(
            info.name,
            str(info.files),
            format_memory(info.bytes) if info.bytes else "0",
            str(info.snapshots),
            info.path,
        )
    out.print(table)


@volume.command("inspect")
@click.argument("name")
def volume_inspect(name: str) -> None:
    """Print a volume's details as JSON."""
    store = VolumeStore()
    info = asdict(store.inspect(name))
    info["snapshots"] = [asdict(s) for s in store.snapshots(name)]
    click.echo(json.dumps(info, indent=2))


@volume.command("rm")
@click.argument("name")
def volume_rm(name: str) -> None:
    """Delete a volume and its snapshots (refused while a run uses it)."""
    VolumeStore().remove(name)
    click.echo(f"removed volume {name}")


@volume.command("snapshot")
@click.argument("name")
@click.option("--tag", help="A name for the snapshot (unique, not a number).")
def volume_snapshot(name: str, tag: str | None) -> None:
    """Freeze the volume's current content."""
    store = VolumeStore()
    if tag is not None:
        check_tag(tag)  # before the lock: a refused command leaves nothing behind
    with store.lock(name, exclusive=True):
        snap = store.snapshot(name, tag)
    click.echo(
        f"snapshot {snap.id}{f' ({tag})' if tag else ''} of {name}: {snap.files} files, "
        f"{format_memory(snap.copied_bytes) if snap.copied_bytes else '0'} copied"
    )


@volume.command("snapshots")
@click.argument("name")
def volume_snapshots(name: str) -> None:
    """List a volume's snapshots."""
    table = Table(box=None, header_style="bold")
    for column in ("id", "tag", "created", "files", "size", "copied"):
        table.add_column(column, no_wrap=True)
    for snap in VolumeStore().snapshots(name):
        table.add_row(
            str(snap.id),
            snap.tag or "",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.created)),
            str(snap.files),
            format_memory(snap.bytes) if snap.bytes else "0",
            format_memory(snap.copied_bytes) if snap.copied_bytes else "0",
        )
    out.print(table)


@volume.command("rollback")
@click.argument("name")
@click.argument("snapshot")
def volume_rollback(name: str, snapshot: str) -> None:
    """Make the volume's content what it was at SNAPSHOT (an id or a tag)."""
    store = VolumeStore()
    check_ref(snapshot)  # before the lock: a refused command leaves nothing behind
    with store.lock(name, exclusive=True):
        copied = store.rollback(name, store.find(name, snapshot))
    click.echo(f"rolled {name} back to snapshot {snapshot} ({copied} bytes copied back)")


@volume.command("send")
@click.argument("name")
@click.option("--from", "base", help="Send only the changes since this snapshot.")
@click.option("--to", "target", help="The snapshot to send (default: the latest).")
def volume_send(name: str, base: str | None, target: str | None) -> None:
    """Write a snapshot (or the increment between two) to stdout."""
    from dockyard.volume_stream import send

    if sys.stdout.isatty():
        raise click.UsageError("the stream is binary: redirect it to a file or a pipe")
    records, size = send(VolumeStore(), name, sys.stdout.buffer, base, target)
    sys.stdout.buffer.flush()
    err.print(f"sent {records} records, {size} bytes")


@volume.command("receive")
@click.argument("name")
def volume_receive(name: str) -> None:
    """Apply a stream from `volume send` on stdin, all or nothing."""
    from dockyard.volume_stream import receive

    snap = receive(VolumeStore(), name, sys.stdin.buffer)
    click.echo(
        f"received snapshot {snap.id} of {name} ({snap.files} files); the volume now holds it"
    )


@contextmanager
def _store(pf: PipelineFile) -> Iterator[Store]:
    store = Store(pf.state_dir / "state.db")
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run the way Ctrl-C does: containers removed, run marked interrupted."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dockyard", standalone_mode=False)
    except DockyardError as exc:
        err.print(f"[bold red]error:[/] {escape(printable(exc.message))}", soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("interrupted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return EXIT_INVALID if isinstance(exc, click.UsageError) else exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted: what it had started was stopped and removed")
        return 130
    except Exception as exc:  # a bug: say so briefly; DOCKYARD_DEBUG=1 shows the traceback
        if os.environ.get("DOCKYARD_DEBUG"):
            raise
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(printable(str(exc)))} "
            "(set DOCKYARD_DEBUG=1 for the traceback, and please report it)"
        )
        return 1
    return 0


__all__ = ["InvalidInput", "cli", "main"]
