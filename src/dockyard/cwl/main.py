"""``dockyard-cwl``: a ``cwl-runner`` that runs CWL on dockyard.

    dockyard-cwl [--outdir DIR] [--quiet] [--cachedir DIR] [--images FILE]
                 [--backend NAME] TOOL_OR_WORKFLOW [JOB]

cwltool's own options are accepted (it parses them); the output object is printed as JSON
on stdout. Exit status: 0 success, 1 a failed tool or workflow (or dockyard could not
run it: the engine is down, an image cannot be found or made), 33 a requirement dockyard
does not support. ``--cachedir DIR`` keeps dockyard's state (its content store and
cache) in DIR, so a rerun reuses what did not change; without it each invocation works in
a state folder of its own, removed at the end, as cwltool without a cache.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cwltool import main as cwltool_main
from cwltool.argparser import arg_parser

from dockyard.backends.choice import choose
from dockyard.cwl.bridge import Bridge
from dockyard.cwl.document import cwl_pipeline_file
from dockyard.cwl.executor import DockyardExecutor
from dockyard.cwl.images import DEFAULT_RECIPE, ToolImages, read_images_file
from dockyard.cwl.tool import tool_maker
from dockyard.disk.sealing import discard
from dockyard.errors import DockyardError
from dockyard.events import Reporter, ignore
from dockyard.execution.feed import WAKE
from dockyard.execution.run import Executor, RunOptions
from dockyard.planning.schedule import ZERO, Capacity
from dockyard.report.progress import PlainProgress
from dockyard.runtime.base import Runtime
from dockyard.spec.model import ImageBuild
from dockyard.state.store import Store

_logger = logging.getLogger("cwltool")
IMAGES_ENVIRONMENT = "DOCKYARD_CWL_IMAGES"  # an images file, where --images is not given
# Fixed paths inside the containers: the command lines, and so the cache keys, do not
# change from run to run.
OUTDIR = "/var/spool/cwl"
STAGEDIR = "/var/lib/cwl"
TMPDIR = "/tmp"
UNSUPPORTED = 33


def main(argv: list[str] | None = None) -> int:
    own, rest = _own_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    args = arg_parser().parse_args(rest)
    try:
        recipes = _recipes(own.images)
        if own.make_images:
            return _make_images(own.backend, recipes)
        with _state_folder(args.cachedir) as state, _sigterm_as_interrupt():
            return _run(args, own.backend, recipes, state)
    except DockyardError as exc:
        print(f"dockyard-cwl: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dockyard-cwl: interrupted", file=sys.stderr)
        return 130


def _own_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--images", type=Path, default=os.environ.get(IMAGES_ENVIRONMENT))
    parser.add_argument("--backend", default=None)
    parser.add_argument("--make-images", action="store_true")
    return parser


def _recipes(images: Path | str | None) -> dict[str, ImageBuild]:
    found = {"cwl-default": DEFAULT_RECIPE}
    if images:
        found.update(read_images_file(Path(images)))
    return found


def run_document(
    workflow: str,
    job: str | None,
    *,
    outdir: Path,
    backend: str | None = None,
    quiet: bool = False,
    no_cache: bool = False,
    images: Path | None = None,
) -> int:
    """``dockyard run WORKFLOW.cwl [JOB]``: the state folder beside the document (the cache
    kept, as a pipeline file's), the outputs copied to ``outdir``; the exit status of
    ``dockyard-cwl``."""
    argv = ["--outdir", str(outdir), *(["--quiet"] if quiet else []), workflow]
    args = arg_parser().parse_args(argv + ([job] if job else []))
    recipes = _recipes(images or os.environ.get(IMAGES_ENVIRONMENT))
    state = cwl_pipeline_file(workflow).state_dir
    with _sigterm_as_interrupt():
        return _run(args, backend, recipes, state, RunOptions(no_cache=no_cache))


def _run(
    args: argparse.Namespace,
    backend: str | None,
    recipes: dict[str, ImageBuild],
    state: Path,
    options: RunOptions | None = None,
) -> int:
    pf = cwl_pipeline_file(args.workflow, recipes, state)
    chosen = choose(backend)
    runtime = chosen.runtime()
    reporter: Reporter = ignore if args.quiet else PlainProgress(sys.stderr)
    note = (lambda m: None) if args.quiet else (lambda m: print(f"dockyard: {m}", file=sys.stderr))
    scratch = state / "cwl-literals"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.closing(Store(pf.state_dir / "state.db")) as store:
            ports = chosen.ports(pf, runtime, note)
            bridge = Bridge(
                ToolImages(pf, runtime, note),
                lambda: _largest(runtime),
                state,
                scratch,
                ports.outputs.locate,
            )
            executor = Executor(
                pf,
                runtime,
                store,
                options=options or RunOptions(),
                reporter=reporter,
                ports=ports,
                feed=bridge,
            )
            bridge.wake = lambda: executor.results.put(WAKE)
            _configure(args, bridge)
            code = cwltool_main.main(args=args, executor=DockyardExecutor(bridge, executor.run))
            return UNSUPPORTED if code == UNSUPPORTED else (0 if code == 0 else 1)
    finally:
        runtime.close()


def _configure(args: argparse.Namespace, bridge: Bridge) -> None:
    """cwltool's options as dockyard runs the tools (read into its contexts by its main)."""
    settings: dict[str, Any] = {
        "construct_tool_object": tool_maker(bridge),
        "relax_path_checks": True,  # (a file name with '#', as the conformance tests have)
        "docker_outdir": OUTDIR,
        "docker_stagedir": STAGEDIR,
        "docker_tmpdir": TMPDIR,
        "use_container": True,
        "cachedir": None,  # (dockyard's cache, in its state folder, answers instead)
        "parallel": False,
    }
    for key, value in settings.items():
        setattr(args, key, value)


def _largest(runtime: Runtime) -> Capacity:
    nodes = [n for n in runtime.nodes() if n.state == "ready"] or runtime.nodes()
    rooms = [Capacity.of(n.capacity.cpus, n.capacity.memory) for n in nodes]
    return max(rooms, key=lambda c: (c.memory, c.millicpus), default=ZERO)


def _make_images(backend: str | None, recipes: dict[str, ImageBuild]) -> int:
    """Make every image of the images file and the default image, then stop."""
    from dockyard.images.resolve import make_images

    with tempfile.TemporaryDirectory(prefix="dockyard-cwl-") as scratch:
        pf = cwl_pipeline_file(None, recipes, Path(scratch))
        runtime = choose(backend).runtime()
        try:
            runtime.ping()
            made: dict[str, str] = {}
            for name in recipes:  # in the file's order: a Dockerfile may build on one above
                made |= make_images(
                    pf, [(name, True)], runtime, lambda m: print(f"dockyard: {m}", file=sys.stderr)
                )
        finally:
            runtime.close()
    for name in recipes:
        print(f"{recipes[name].tag}\t{made[name]}")
    return 0


@contextlib.contextmanager
def _state_folder(cachedir: str | None) -> Iterator[Path]:
    """The state folder of this invocation: ``--cachedir``, kept; else one of its own."""
    if cachedir:
        folder = Path(cachedir).absolute()
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="dockyard-cwl-"))
    try:
        yield folder
    finally:
        discard(folder)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run as Ctrl-C does: its containers removed."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
