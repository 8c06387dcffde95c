"""The CWL runner's work (see :mod:`dockyard.cwl.main` for the command): cwltool's options
set for dockyard, a dockyard run fed by cwltool's workflow engine, and the record a
no-change rerun is answered from (:mod:`dockyard.cwl.rerun`)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cwltool import main as cwltool_main
from cwltool.argparser import arg_parser
from cwltool.stdfsaccess import StdFsAccess
from schema_salad.fetcher import DefaultFetcher
from schema_salad.ref_resolver import uri_file_path

from dockyard.backends.choice import LOCAL, choose
from dockyard.cwl.bridge import Bridge
from dockyard.cwl.document import cwl_pipeline_file
from dockyard.cwl.executor import DockyardExecutor
from dockyard.cwl.images import DEFAULT_RECIPE, ToolImages, read_images_file
from dockyard.cwl.rerun import Invocation, answer, simple_invocation, write_record
from dockyard.cwl.tool import tool_maker
from dockyard.disk.sealing import discard
from dockyard.errors import DockyardError
from dockyard.events import Reporter, ignore
from dockyard.execution.feed import WAKE
from dockyard.execution.run import Executor, RunOptions
from dockyard.interrupts import terminate_as_interrupt
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
REMOTE = "remote:"  # (a document read from the network, in the set of what was read)


def run_command(argv: list[str], invocation: Invocation | None) -> int:
    """``dockyard-cwl ARGV`` (``invocation``: the same, when simple enough to record)."""
    own, rest = _own_parser().parse_known_args(argv)
    args = arg_parser().parse_args(rest)
    try:
        recipes = _recipes(own.images)
        if own.make_images:
            return _make_images(own.backend, recipes)
        with _state_folder(args.cachedir) as state, terminate_as_interrupt():
            return _run(args, own.backend, recipes, state, invocation=invocation)
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
    options: RunOptions | None = None,
    images: Path | None = None,
) -> int:
    """``dockyard run WORKFLOW.cwl [JOB]``: the state folder beside the document (the cache
    kept, as a pipeline file's), the outputs copied to ``outdir``; the exit status of
    ``dockyard-cwl``. ``options``: the run's (``keep_going`` is cwltool's
    ``--on-error continue``)."""
    options = options or RunOptions()
    argv = ["--outdir", str(outdir), *(["--quiet"] if quiet else []), workflow]
    argv += [job] if job else []
    state = cwl_pipeline_file(workflow).state_dir
    invocation = None
    plain = options.max_cpus is None and options.max_memory is None and not options.keep_going
    if not options.no_cache and plain:
        extra = [
            *(["--images", str(images)] if images else []),
            *(["--backend", backend] if backend else []),
        ]
        invocation = simple_invocation(argv + extra, state)
        with contextlib.suppress(KeyError, TypeError, ValueError):  # (a record of another shape)
            if invocation is not None and answer(invocation, sys.stdout):
                return 0
    args = arg_parser().parse_args(
        (["--on-error", "continue"] if options.keep_going else []) + argv
    )
    recipes = _recipes(images or os.environ.get(IMAGES_ENVIRONMENT))
    with terminate_as_interrupt():
        return _run(args, backend, recipes, state, options, invocation=invocation)


def _run(
    args: argparse.Namespace,
    backend: str | None,
    recipes: dict[str, ImageBuild],
    state: Path,
    options: RunOptions | None = None,
    *,
    invocation: Invocation | None = None,
) -> int:
    pf = cwl_pipeline_file(args.workflow, recipes, state)
    chosen = choose(backend)
    runtime = chosen.runtime()
    reporter: Reporter = ignore if args.quiet else PlainProgress(sys.stderr)
    note = (lambda m: None) if args.quiet else (lambda m: print(f"dockyard: {m}", file=sys.stderr))
    (state / "cwl-literals").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=state / "cwl-literals"))
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
            bridge.can_seed = chosen is LOCAL  # (a cluster's workspace cannot seed yet)
            fetched: set[str] = set()
            _configure(args, bridge, fetched)
            runner = DockyardExecutor(bridge, executor.run)
            printed = io.StringIO()
            code = cwltool_main.main(args=args, executor=runner, stdout=printed)
            sys.stdout.write(printed.getvalue())
            sys.stdout.flush()
            if code == 0 and invocation is not None and runner.run_id is not None:
                _record(invocation, runner, bridge, fetched, printed.getvalue(), recipes)
            return UNSUPPORTED if code == UNSUPPORTED else (0 if code == 0 else 1)
    finally:
        runtime.close()
        discard(scratch)  # (what literal files the tools were given: only for this run)


def _record(
    invocation: Invocation,
    runner: DockyardExecutor,
    bridge: Bridge,
    fetched: set[str],
    printed: str,
    recipes: dict[str, ImageBuild],
) -> None:
    """Leave the record a no-change rerun is answered from, where it can be trusted: not
    when a tool's work must not be reused, nor when cwltool read from the network."""
    if bridge.not_reusable or any(path.startswith(REMOTE) for path in fetched):
        return
    built = [str(recipe.build) for recipe in recipes.values() if recipe.build is not None]
    assert runner.run_id is not None
    try:
        write_record(
            invocation,
            runner.run_id,
            [*fetched, *built],
            runner.job_order,
            bridge.staged,
            dict(bridge.images),
            runner.committed,
            json.loads(printed),
        )
    except (OSError, ValueError) as exc:  # (the run succeeded: only a later rerun loses)
        print(f"dockyard: no rerun record left: {exc}", file=sys.stderr)


def _configure(args: argparse.Namespace, bridge: Bridge, fetched: set[str]) -> None:
    """cwltool's options as dockyard runs the tools (read into its contexts by its main);
    the local files cwltool reads (documents, the job file) are added to ``fetched``."""
    settings: dict[str, Any] = {
        "construct_tool_object": tool_maker(bridge),
        "fetcher_constructor": recording_fetcher(fetched),
        "make_fs_access": recording_fs_access(fetched),
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


def recording_fetcher(seen: set[str]) -> Any:
    """schema-salad's fetcher, noting each document it reads (a local file by its path,
    anything else as ``REMOTE`` and its address)."""

    class Recording(DefaultFetcher):
        def fetch_text(self, url: str, content_types: list[str] | None = None) -> str:
            if url.startswith("file://"):
                seen.add(uri_file_path(url.split("#", 1)[0]))
            else:
                seen.add(REMOTE + url)
            return super().fetch_text(url, content_types)

    return Recording


def recording_fs_access(seen: set[str]) -> Any:
    """cwltool's access to files (what expressions read with loadContents, the secondary
    files it looks for, the listings it makes), noting each path it asks about."""

    class Recording(StdFsAccess):
        def _abs(self, p: str) -> str:
            path = super()._abs(p)
            seen.add(path)
            return path

    return Recording
