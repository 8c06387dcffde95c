"""The ``dockyard`` command line: the group, shared options, and how errors become exit
statuses (0 success; 1 a step failed; 2 invalid input, nothing started; 3 the container
engine could not be reached; 130 interrupted). The commands live in :mod:`.run`,
:mod:`.inspect` and :mod:`.volume`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from dockyard import __version__
from dockyard.cwl.document import cwl_pipeline_file, is_cwl
from dockyard.errors import EXIT_INVALID, DockyardError
from dockyard.interrupts import terminate_as_interrupt
from dockyard.spec import DEFAULT_FILE, PipelineFile, load_pipeline
from dockyard.state.store import Store
from dockyard.terminal import printable

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
        help="The pipeline file (or a CWL document, for the commands that inspect runs).",
    )(fn)


def params_options(fn: F) -> F:
    """``--param NAME=VALUE`` (repeatable) and ``--params FILE``: the file's ``params:``."""
    fn = click.option(
        "--params",
        "params_file",
        type=click.Path(dir_okay=False),
        help="A YAML file of parameter values (name: value).",
    )(fn)
    return click.option(
        "--param",
        "params",
        multiple=True,
        metavar="NAME=VALUE",
        help="Set a parameter of the pipeline file's params: (repeatable; wins over --params).",
    )(fn)


def pipeline_or_cwl(file: str) -> PipelineFile:
    """The pipeline file ``-f`` names, or, for a CWL document, what its runs keep: for the
    commands that show a past run, which need its name and steps, not what a run with
    these parameters would read (a sample sheet the run named by ``--param``)."""
    return cwl_pipeline_file(file) if is_cwl(file) else load_pipeline(file, checked=False)


def backend_option(fn: F) -> F:
    return click.option(
        "--backend",
        help="Where to run: local (the default) or swarm; or set DOCKYARD_BACKEND.",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockyard")
def cli() -> None:
    """Run containerized data pipelines with stateful steps."""


@contextmanager
def open_store(pf: PipelineFile) -> Iterator[Store]:
    store = Store(pf.state_dir / "state.db")
    try:
        yield store
    finally:
        store.close()


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


__all__ = [
    "backend_option",
    "cli",
    "err",
    "file_option",
    "main",
    "open_store",
    "out",
    "terminate_as_interrupt",
]
