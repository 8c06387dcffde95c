"""Checks that need the whole pipeline: references, cycles, paths, interpolation."""

from __future__ import annotations

import difflib
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from dockyard.errors import SpecIssue
from dockyard.spec.interpolate import interpolate, variables
from dockyard.spec.locate import Loc, Locator, dotted
from dockyard.spec.model import Glob, ImageSpec, Pipeline, Step, VolumeMount

RESERVED_MOUNTS = ("/out", "/in")
MAX_COMBINATIONS = 100_000


class _Collector:
    def __init__(self, locator: Locator, shown: str):
        self.locator = locator
        self.shown = shown
        self.issues: list[SpecIssue] = []

    def add(self, loc: Loc, message: str, *, key: bool = False) -> None:
        line, col = self.locator.position(loc, key=key)
        self.issues.append(SpecIssue(self.shown, line, col, dotted(loc), message))


def check_pipeline(pipeline: Pipeline, root: Path, locator: Locator, shown: str) -> list[SpecIssue]:
    out = _Collector(locator, shown)
    steps = pipeline.steps
    for name, step in steps.items():
        loc: list[str | int] = ["steps", name]
        _check_refs(out, pipeline, loc, step)
        _check_stdin(out, steps, loc, step)
        values = _check_scatter(out, root, loc, step)
        _check_interpolation(out, loc, step)
        _check_inputs(out, root, loc, step, values)
        _check_mounts(out, loc, step.volumes)
        if step.image is not None:
            _check_image(out, pipeline, [*loc, "image"], step.image)
    if pipeline.defaults.image is not None:
        _check_image(out, pipeline, ["defaults", "image"], pipeline.defaults.image)
    _check_single_consumer(out, steps)
    _check_pairing(out, steps, root)
    _check_cycles(out, steps)
    for name, service in pipeline.services.items():
        loc = ["services", name]
        _check_image(out, pipeline, [*loc, "image"], service.image)
        _check_mounts(out, loc, service.volumes)
        for volume in service.volumes:
            if volume not in pipeline.volumes:
                out.add(
                    [*loc, "volumes", volume],
                    _unknown("volume", volume, pipeline.volumes),
                    key=True,
                )
    tags: dict[str, str] = {}
    for name, image in pipeline.images.items():
        if image.build is not None:
            loc = ["images", name, "build"]
            context = _inside(out, root, loc, image.build)
            if context is not None and not (context / "Dockerfile").is_file():
                out.add(loc, f"expected a directory with a Dockerfile, found {image.build!r}")
        if image.tag is not None:
            if image.tag in tags:
                out.add(
                    ["images", name, "tag"],
                    f"expected a tag of its own, found {image.tag!r}, "
                    f"which images.{tags[image.tag]} already has",
                )
            tags.setdefault(image.tag, name)
    for name, declared in pipeline.volumes.items():
        if declared.seed is not None:
            _inside(out, root, ["volumes", name, "seed"], declared.seed)
    return out.issues


def scatter_values(step: Step, root: Path) -> dict[str, tuple[str, ...]]:
    """The values of each scatter variable, with globs expanded (sorted file names)."""
    result: dict[str, tuple[str, ...]] = {}
    for var, spec in step.scatter.items():
        if isinstance(spec, Glob):
            result[var] = tuple(sorted({p.name for p in root.glob(spec.glob) if p.exists()}))
        else:
            result[var] = tuple(spec)
    return result


def combinations(values: dict[str, tuple[str, ...]]) -> Iterator[dict[str, str]]:
    names = list(values)
    for combo in itertools.product(*(values[n] for n in names)):
        yield dict(zip(names, combo, strict=True))


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


def _check_pairing(out: _Collector, steps: dict[str, Step], root: Path) -> None:
    """A step that pairs with an upstream step on a scatter variable needs a partner per value."""
    for name, step in steps.items():
        if not step.scatter:
            continue
        mine = scatter_values(step, root)
        for up in step.upstream:
            if up not in steps or not steps[up].scatter:
                continue
            theirs = scatter_values(steps[up], root)
            if not set(theirs) <= set(mine):
                continue  # a gather over the variables this step does not share
            for var in theirs:
                missing = [v for v in mine[var] if v not in theirs[var]]
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
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(steps, white)
    reported: set[frozenset[str]] = set()

    def visit(name: str, trail: list[str]) -> None:
        color[name] = grey
        trail.append(name)
        for up in steps[name].upstream:
            if up not in steps:
                continue
            if color[up] == grey:
                cycle = trail[trail.index(up) :]
                members = frozenset(cycle)
                if members not in reported:
                    reported.add(members)
                    arrow = " → ".join([*cycle, up])
                    out.add(
                        ["steps", cycle[0]],
                        f"steps {', '.join(sorted(members))} form a cycle: {arrow}",
                        key=True,
                    )
            elif color[up] == white:
                visit(up, trail)
        trail.pop()
        color[name] = black

    for name in steps:
        if color[name] == white:
            visit(name, [])


def _check_scatter(
    out: _Collector, root: Path, loc: list[str | int], step: Step
) -> dict[str, tuple[str, ...]]:
    for var, spec in step.scatter.items():
        where = [*loc, "scatter", var]
        if isinstance(spec, Glob):
            if _inside(out, root, [*where, "glob"], spec.glob, must_exist=False) is None:
                continue
            if not any(p.exists() for p in root.glob(spec.glob)):
                out.add([*where, "glob"], f"glob {spec.glob!r} matches no file under {root}")
            continue
        for i, value in enumerate(spec):
            if not value or value in (".", "..") or "/" in value or "\0" in value:
                out.add([*where, i], f"expected a value usable as a file name, found {value!r}")
        dupes = sorted({v for v in spec if spec.count(v) > 1})
        if dupes:
            out.add(where, f"scatter values must be unique; repeated: {', '.join(dupes)}")
    values = scatter_values(step, root)
    total = 1
    for v in values.values():
        total *= max(len(v), 1)
    if total > MAX_COMBINATIONS:
        out.add([*loc, "scatter"], f"expected at most {MAX_COMBINATIONS} instances, found {total}")
    return values


def _check_interpolation(out: _Collector, loc: list[str | int], step: Step) -> None:
    known = set(step.scatter)
    texts: list[tuple[list[str | int], str]] = []
    if isinstance(step.command, str):
        texts.append(([*loc, "command"], step.command))
    elif step.command is not None:
        texts.extend(([*loc, "command", i], part) for i, part in enumerate(step.command))
    texts.extend(([*loc, "env", key], value) for key, value in step.env.items())
    texts.extend(([*loc, "inputs", key], value) for key, value in step.inputs.items())
    for where, text in texts:
        for name in variables(text):
            if name not in known:
                hint = (
                    f" (scatter variables here: {', '.join(sorted(known))})"
                    if known
                    else " (this step has no scatter variables; write $${...} for a literal)"
                )
                out.add(where, f"unknown variable ${{{name}}}{hint}")


def _check_inputs(
    out: _Collector,
    root: Path,
    loc: list[str | int],
    step: Step,
    values: dict[str, tuple[str, ...]],
) -> None:
    for name, raw in step.inputs.items():
        where = [*loc, "inputs", name]
        if name in step.upstream:
            out.add(
                where,
                f"expected another name: /in/{name} is where the output of step {name!r} "
                "that this step needs is mounted",
                key=True,
            )
        try:
            paths = {
                interpolate(raw, combo) for combo in itertools.islice(combinations(values), 1000)
            }
        except KeyError:
            continue  # reported by the interpolation check
        for path in sorted(paths):
            if _inside(out, root, where, path, original=raw) is None:
                break


def _check_mounts(out: _Collector, loc: list[str | int], mounts: dict[str, VolumeMount]) -> None:
    seen: dict[str, str] = {}
    for volume, mount in mounts.items():
        where = [*loc, "volumes", volume]
        for reserved in RESERVED_MOUNTS:
            if mount.path == reserved or mount.path.startswith(reserved + "/"):
                out.add(
                    where,
                    f"{mount.path} is reserved for dockyard's data flow "
                    "(/out and /in); mount the volume elsewhere",
                )
        if mount.path == "/":
            out.add(where, "a volume cannot be mounted at /")
        if mount.path in seen:
            out.add(
                where, f"{mount.path} is already the mount point of volume {seen[mount.path]!r}"
            )
        seen[mount.path] = volume


def _inside(
    out: _Collector,
    root: Path,
    loc: list[str | int],
    raw: str,
    *,
    must_exist: bool = True,
    original: str | None = None,
) -> Path | None:
    """Resolve a host path from the pipeline file; it must stay under the file's folder."""
    shown = original if original is not None and original != raw else raw
    if not raw:
        out.add(loc, "expected a relative path, found an empty string")
        return None
    if os.path.isabs(raw) or raw.startswith("~"):
        out.add(loc, f"expected a path relative to the pipeline file's folder, found {shown!r}")
        return None
    real_root = Path(os.path.realpath(root))
    resolved = Path(os.path.realpath(root / raw))
    if resolved != real_root and real_root not in resolved.parents:
        out.add(loc, f"path {shown!r} escapes the pipeline file's folder {str(root)!r}")
        return None
    if must_exist and not resolved.exists():
        out.add(loc, f"path {raw!r} does not exist under {str(root)!r}")
        return None
    return resolved
