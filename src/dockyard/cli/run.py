"""Commands that check or run a pipeline, or make its images."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.text import Text

from dockyard.backends.choice import choose
from dockyard.cli.app import (
    backend_option,
    cli,
    err,
    file_option,
    open_store,
    out,
    params_options,
    terminate_as_interrupt,
)
from dockyard.cwl.document import is_cwl
from dockyard.errors import InvalidInput, UnknownReference
from dockyard.execution import Executor, RunOptions
from dockyard.planning.preflight import graph_of
from dockyard.report.progress import LiveProgress, PlainProgress
from dockyard.spec import load_pipeline
from dockyard.terminal import printable
from dockyard.units import parse_memory


@cli.command()
@file_option
@params_options
def validate(file: str, params: tuple[str, ...], params_file: str | None) -> None:
    """Check the pipeline file; report every problem with its line."""
    pf = load_pipeline(file, params=params, params_file=params_file)
    graph = graph_of(pf)
    steps = len(pf.pipeline.steps)
    out.print(
        f"{escape(printable(file))}: ok ({steps} step{'s' if steps != 1 else ''}, "
        f"{len(graph.order)} instance{'s' if len(graph.order) != 1 else ''})"
    )
    for name, value in pf.params.items():  # (what a run with these settings would have)
        about = pf.pipeline.params[name].help
        line = f"  params.{name} = {json.dumps(value)}" + (f"  # {about}" if about else "")
        out.print(Text(printable(line)), soft_wrap=True)


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
@click.option(
    "--outdir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="A CWL document's outputs are copied here.",
)
@click.option(
    "--images",
    type=click.Path(dir_okay=False, exists=True),
    help="How to make a CWL document's named images offline (an images: file).",
)
@params_options
@click.argument("document", required=False, metavar="[WORKFLOW.cwl [JOB]]")
@click.argument("job", required=False)
@backend_option
def run(
    file: str,
    params: tuple[str, ...],
    params_file: str | None,
    no_cache: bool,
    max_cpus: float | None,
    max_memory: str | None,
    wait_for_volumes: bool,
    keep_going: bool,
    outdir: str,
    images: str | None,
    document: str | None,
    job: str | None,
    backend: str | None,
) -> None:
    """Run the pipeline to completion, or a CWL workflow or tool with its job file.

    A CWL run prints its output object as JSON and exits 1 when a tool or the workflow
    failed, 33 when it needs a requirement dockyard does not support."""
    memory = None
    if max_memory is not None:
        try:
            memory = parse_memory(max_memory)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--max-memory") from None
    options = RunOptions(
        max_cpus=max_cpus,
        max_memory=memory,
        no_cache=no_cache,
        keep_going=keep_going,
        wait_for_volumes=wait_for_volumes,
    )
    if document is not None or is_cwl(file):
        if params or params_file:
            raise InvalidInput(
                "--param and --params set a pipeline file's params:; a CWL workflow takes "
                "its inputs from its job file"
            )
        images_file = Path(images) if images else None
        _run_cwl(document or file, job, outdir, options, backend, images_file)
        return
    pf = load_pipeline(file, params=params, params_file=params_file)
    chosen = choose(backend)
    runtime = chosen.runtime()
    live = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    reporter = LiveProgress(out) if live else PlainProgress(sys.stdout)
    with open_store(pf) as store, terminate_as_interrupt():
        try:
            ports = chosen.ports(pf, runtime, click.echo)
            executor = Executor(pf, runtime, store, options=options, reporter=reporter, ports=ports)
            run_id = executor.run()
        finally:
            reporter.close()
            runtime.close()
    click.echo(f"run {run_id} succeeded; see `dockyard status` and `dockyard outputs STEP`")


def _run_cwl(
    document: str,
    job: str | None,
    outdir: str,
    options: RunOptions,
    backend: str | None,
    images: Path | None,
) -> None:
    if not is_cwl(document):
        raise InvalidInput(f"{document}: not a CWL document (a .cwl file)")
    try:
        from dockyard.cwl.runner import run_document
    except ImportError as exc:  # (cwltool is an optional dependency)
        raise InvalidInput(
            f"running CWL needs dockyard's cwl extra (pip install 'dockyard[cwl]'): {exc}"
        ) from None
    code = run_document(
        document, job, outdir=Path(outdir), backend=backend, options=options, images=images
    )
    if code:
        sys.exit(code)


@cli.command()
@file_option
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Make them again even when they exist.")
@params_options
@backend_option
def build(
    file: str,
    names: tuple[str, ...],
    force: bool,
    params: tuple[str, ...],
    params_file: str | None,
    backend: str | None,
) -> None:
    """Make the images of `images:` (all, or the NAMES given) that the engine lacks."""
    pf = load_pipeline(file, params=params, params_file=params_file)
    declared = pf.pipeline.images
    for name in names:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise UnknownReference(f"images: has no entry {name!r} (it has: {known})")
    from dockyard.images.resolve import make_images, source_of, tag_of

    wanted = list(dict.fromkeys(names)) or list(declared)
    runtime = choose(backend).runtime()
    try:
        with terminate_as_interrupt():
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
