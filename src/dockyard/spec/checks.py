"""Checks that need the whole pipeline: references, cycles, pairing, mounts, images.

What each step's instances get (scatter values, interpolation, host paths) is checked
with the rules of :mod:`dockyard.spec.values` and :mod:`dockyard.spec.paths`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

from dockyard.errors import SpecIssue, short_repr
from dockyard.names import reference_problem
from dockyard.spec.interpolate import interpolate, variables
from dockyard.spec.locate import Loc, Locator, dotted
from dockyard.spec.model import ImageSpec, Pipeline, Service, SheetSource, Step, VolumeMount
from dockyard.spec.params import PREFIX
from dockyard.spec.paths import BadPath, Resolver
from dockyard.spec.sources import StepValues, check_scatter, combinations
from dockyard.spec.values import check_interpolation, check_lengths, check_params_in_scripts

# /out and /in carry the data flow, /.dockyard the stream helper and its FIFOs; the
# container runtime refuses a bind mount in /proc or /sys.
RESERVED_MOUNTS = ("/out", "/in", "/.dockyard", "/proc", "/sys")
MAX_REPORTED_PATHS = 5  # problems reported per input; the rest are counted
Scatter = dict[str, StepValues]


class _Collector:
    def __init__(self, locator: Locator, shown: str):
        self.locator = locator
        self.shown = shown
        self.issues: list[SpecIssue] = []

    def add(self, loc: Loc, message: str, *, key: bool = False) -> None:
        line, col = self.locator.position(loc, key=key)
        self.issues.append(SpecIssue(self.shown, line, col, dotted(loc), message))

    def in_sheet(self, sheet: str, line: int | None, message: str) -> None:
        """A problem in a sample sheet (named relative to the pipeline file's folder),
        shown beside the pipeline file as that is shown; once, whichever steps read it."""
        issue = SpecIssue(os.path.join(os.path.dirname(self.shown), sheet), line, None, "", message)
        if issue not in self.issues:
            self.issues.append(issue)

    def path(self, loc: Loc, resolved: Path | str) -> Path | None:
        """The resolved path, or None with its problem reported."""
        if isinstance(resolved, str):
            self.add(loc, resolved)
            return None
        return resolved


def check_pipeline(
    pipeline: Pipeline, root: Path, locator: Locator, shown: str, params: dict[str, str]
) -> tuple[list[SpecIssue], Scatter]:
    """Every problem found, and each step's scatter values (globs expanded, sheets read).

    ``params``: what each ``${params.NAME}`` renders as in this run."""
    out = _Collector(locator, shown)
    resolver = Resolver(root)
    steps = pipeline.steps
    scatter: Scatter = {}
    param_names = [name[len(PREFIX) :] for name in params]
    for name, step in steps.items():
        loc: list[str | int] = ["steps", name]
        _check_refs(out, pipeline, loc, step)
        _check_stdin(out, steps, loc, step)
        found = check_scatter(out.add, out.in_sheet, resolver, loc, step, params)
        sheet = any(isinstance(spec, SheetSource) for spec in step.scatter.values())
        columns = found.columns if found is not None else None if sheet else {}
        check_interpolation(
            out.add, loc, step, pipeline.defaults, columns=columns, params=param_names
        )
        check_params_in_scripts(out.add, loc, step, params)
        if found is not None:
            scatter[name] = found
            pasted = {**found.values, **found.columns, **{k: (v,) for k, v in params.items()}}
            check_lengths(out.add, loc, step, pipeline.defaults, pasted)
            _check_inputs(out, resolver, loc, step, found, params)
        _check_mounts(out, loc, step.volumes)
        if step.image is not None:
            _check_image(out, pipeline, [*loc, "image"], step.image)
    if pipeline.defaults.image is not None:
        _check_image(out, pipeline, ["defaults", "image"], pipeline.defaults.image)
    _check_single_consumer(out, steps)
    _check_pairing(out, steps, scatter)
    _check_cycles(out, steps)
    for name, service in pipeline.services.items():
        loc = ["services", name]
        _check_no_params(out, loc, service)
        _check_image(out, pipeline, [*loc, "image"], service.image)
        _check_mounts(out, loc, service.volumes)
        for volume in service.volumes:
            if volume not in pipeline.volumes:
                out.add(
                    [*loc, "volumes", volume],
                    _unknown("volume", volume, pipeline.volumes),
                    key=True,
                )
    _check_images(out, pipeline, resolver)
    for name, declared in pipeline.volumes.items():
        if declared.seed is not None:
            # (a seed is copied into a volume that steps mount: the state folder stays out)
            loc = ["volumes", name, "seed"]
            seed = out.path(loc, resolver.resolve(declared.seed))
            if seed is not None and not seed.is_dir():
                out.add(
                    loc,
                    "expected a folder whose content the volume starts with, found a file "
                    f"({short_repr(declared.seed)})",
                )
    return out.issues, scatter


def _check_no_params(out: _Collector, loc: list[str | int], service: Service) -> None:
    """A service's command and env are passed as written: a ``${params.NAME}`` there
    would reach it as those very characters, which is never what was meant."""
    texts: list[tuple[list[str | int], str]] = []
    if isinstance(service.command, str):
        texts.append(([*loc, "command"], service.command))
    elif service.command is not None:
        texts.extend(([*loc, "command", i], part) for i, part in enumerate(service.command))
    texts.extend(([*loc, "env", key], value) for key, value in service.env.items())
    for where, text in texts:
        if "${" + PREFIX in text:
            out.add(
                where,
                "${params.NAME} is not replaced in a service's command or env (they are "
                "passed as written); write the value there (a service's resources may "
                "name a parameter)",
            )


def _check_images(out: _Collector, pipeline: Pipeline, resolver: Resolver) -> None:
    tags: dict[str, str] = {}
    for name, image in pipeline.images.items():
        if image.build is not None:
            loc = ["images", name, "build"]
            context = out.path(loc, resolver.resolve(image.build, state=False))
            if context is not None and not (context / "Dockerfile").is_file():
                out.add(
                    loc, f"expected a directory with a Dockerfile, found {short_repr(image.build)}"
                )
        if image.tag is not None:
            if image.tag in tags:
                out.add(
                    ["images", name, "tag"],
                    f"expected a tag of its own, found {short_repr(image.tag)}, "
                    f"which images.{tags[image.tag]} already has",
                )
            tags.setdefault(image.tag, name)
        elif reference_problem(f"dockyard/{pipeline.name}-{name}:0123456789ab") is not None:
            out.add(
                ["images", name],
                f"the default tag of this image, dockyard/{pipeline.name}-{name}:<digest>, is "
                "not a valid image reference (the engine takes '-', '_' and '.' only between "
                "letters or digits); give it a tag:",
                key=True,
            )


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    message = f"unknown {kind} {name!r}"
    hint = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return message + (f" (did you mean {hint[0]!r}?)" if hint else "")


def _check_refs(out: _Collector, pipeline: Pipeline, loc: list[str | int], step: Step) -> None:
    for i, need in enumerate(step.needs):
        if need == loc[-1]:
            out.add([*loc, "needs", i], f"step {need!r} cannot need itself")
        elif need not in pipeline.steps:
            out.add([*loc, "needs", i], _unknown("step", need, pipeline.steps))
    for i, service in enumerate(step.services):
        if service not in pipeline.services:
            out.add([*loc, "services", i], _unknown("service", service, pipeline.services))
    for volume in step.volumes:
        if volume not in pipeline.volumes:
            out.add(
                [*loc, "volumes", volume], _unknown("volume", volume, pipeline.volumes), key=True
            )


def _check_image(
    out: _Collector, pipeline: Pipeline, loc: list[str | int], image: ImageSpec
) -> None:
    if image.ref is not None and image.ref not in pipeline.images:
        out.add([*loc, "ref"], _unknown("image", image.ref, pipeline.images))


def _check_stdin(out: _Collector, steps: dict[str, Step], loc: list[str | int], step: Step) -> None:
    producer = step.stdin
    if producer is None:
        return
    where = [*loc, "stdin"]
    if producer == loc[-1]:
        out.add(where, "a step cannot read its own stdout")
        return
    if producer not in steps:
        out.add(where, _unknown("step", producer, steps))
        return
    theirs = steps[producer].scatter
    if set(theirs) != set(step.scatter):
        out.add(
            where,
            f"stdin: {producer!r} is scattered over {sorted(theirs) or 'nothing'} but this step "
            f"over {sorted(step.scatter) or 'nothing'}; a streamed pair must scatter over the "
            "same variables so that each instance pairs with one producer",
        )
    elif any(theirs[v] != step.scatter[v] for v in theirs):
        out.add(where, f"stdin: {producer!r} must scatter over the same values as this step")


def _check_single_consumer(out: _Collector, steps: dict[str, Step]) -> None:
    consumers: dict[str, list[str]] = {}
    for name, step in steps.items():
        if step.stdin:
            consumers.setdefault(step.stdin, []).append(name)
    for producer, names in consumers.items():
        for extra in names[1:]:
            out.add(
                ["steps", extra, "stdin"],
                f"stdin: {producer!r} already feeds {names[0]!r}; a step's stdout "
                "feeds at most one consumer",
            )


def _check_pairing(out: _Collector, steps: dict[str, Step], scatter: Scatter) -> None:
    """A step that pairs with an upstream step on a scatter variable needs a partner per value."""
    for name, step in steps.items():
        mine = scatter[name].values if name in scatter else None
        if not step.scatter or mine is None:
            continue
        for up in step.upstream:
            theirs = scatter[up].values if up in scatter else None
            if up not in steps or not steps[up].scatter or theirs is None:
                continue
            if not set(theirs) <= set(mine):
                continue  # a gather over the variables this step does not share
            for var in theirs:
                have = set(theirs[var])
                missing = [v for v in mine[var] if v not in have]
                if missing:
                    where: list[str | int] = (
                        ["steps", name, "needs", step.needs.index(up)]
                        if up in step.needs
                        else ["steps", name, "stdin"]
                    )
                    out.add(
                        where,
                        f"this step pairs with {up!r} on {var!r}, but {up!r} has no "
                        f"instance for {', '.join(map(repr, missing[:5]))}",
                    )


def _check_cycles(out: _Collector, steps: dict[str, Step]) -> None:
    """Depth first along ``needs`` and ``stdin``, with its own stack: a chain of thousands
    of steps must not exhaust Python's recursion limit."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(steps, white)
    reported: set[frozenset[str]] = set()
    for start in steps:
        if color[start] != white:
            continue
        color[start] = grey
        trail = [start]
        pending = [iter(steps[start].upstream)]
        while pending:
            up = next(pending[-1], None)
            if up is None:
                pending.pop()
                color[trail.pop()] = black
            elif up not in steps:
                continue
            elif color[up] == grey:
                cycle = trail[trail.index(up) :]
                members = frozenset(cycle)
                if members not in reported:
                    reported.add(members)
                    out.add(["steps", cycle[0]], _cycle_message(cycle), key=True)
            elif color[up] == white:
                color[up] = grey
                trail.append(up)
                pending.append(iter(steps[up].upstream))


def _cycle_message(cycle: list[str], most: int = 12) -> str:
    if len(cycle) <= most:
        arrow = " → ".join([*cycle, cycle[0]])
        return f"steps {', '.join(sorted(cycle))} form a cycle: {arrow}"
    arrow = " → ".join([*cycle[: most // 2], "…", *cycle[-most // 2 :], cycle[0]])
    return f"{len(cycle)} steps form a cycle: {arrow}"


def _check_inputs(
    out: _Collector,
    resolver: Resolver,
    loc: list[str | int],
    step: Step,
    found: StepValues,
    params: dict[str, str],
) -> None:
    """Every path any instance mounts, each distinct one once: only the variables an input
    names make its paths differ, and each costs about one lstat."""
    known = {*found.values, *found.columns, *params}
    for name, raw in step.inputs.items():
        where = [*loc, "inputs", name]
        if name in step.upstream:
            out.add(
                where,
                f"expected another name: /in/{name} is where the output of step {name!r} "
                "that this step needs is mounted",
                key=True,
            )
        used = variables(raw)
        if not all(v in known for v in used):
            continue  # an unknown variable, reported by the interpolation check
        paths = {interpolate(raw, combo) for combo in combinations(found, params, used)}
        refused = []
        for path in sorted(paths):
            try:
                resolver.real(path, shown=raw)
            except BadPath as exc:
                refused.append(str(exc))
        for problem in refused[:MAX_REPORTED_PATHS]:
            out.add(where, problem)
        if len(refused) > MAX_REPORTED_PATHS:
            out.add(where, f"… and {len(refused) - MAX_REPORTED_PATHS} more paths like these")


def _check_mounts(out: _Collector, loc: list[str | int], mounts: dict[str, VolumeMount]) -> None:
    seen: dict[str, str] = {}
    for volume, mount in mounts.items():
        where = [*loc, "volumes", volume]
        for reserved in RESERVED_MOUNTS:
            if mount.path == reserved or mount.path.startswith(reserved + "/"):
                out.add(
                    where,
                    f"{mount.path} is reserved ({', '.join(RESERVED_MOUNTS)}: dockyard's data "
                    "flow and helpers, and the kernel's own file systems); mount the volume "
                    "elsewhere",
                )
        if mount.path == "/":
            out.add(where, "a volume cannot be mounted at /")
        if mount.path in seen:
            out.add(
                where, f"{mount.path} is already the mount point of volume {seen[mount.path]!r}"
            )
        seen[mount.path] = volume
