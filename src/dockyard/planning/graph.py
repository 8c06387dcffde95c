"""Expand a pipeline into its instance graph (pure: no I/O).

A step with ``scatter`` becomes one instance per combination of values
(``align[a]``); a step without becomes one instance with an empty key. Each
instance knows exactly which upstream outputs it mounts, and where.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from dockyard.errors import PlanError
from dockyard.spec.interpolate import Template, variables
from dockyard.spec.model import DEFAULT_PIDS, ImageSpec, Pipeline, Retries
from dockyard.spec.sheets import Sheet
from dockyard.spec.values import not_shell_inert, shell_problem, shell_scripts

ScatterValues = Mapping[str, Mapping[str, tuple[str, ...]]]


class InstanceId(NamedTuple):
    """``step[key]``: a tuple, so that hashing one (every lookup does) costs C, not Python."""

    step: str
    key: str = ""

    def __str__(self) -> str:
        return f"{self.step}[{self.key}]" if self.key else self.step

    @classmethod
    def parse(cls, text: str) -> InstanceId:
        if text.endswith("]") and "[" in text:
            step, _, key = text[:-1].partition("[")
            return cls(step, key)
        return cls(text)


@dataclass(frozen=True, slots=True)
class UpstreamMount:
    source: InstanceId
    target: str


@dataclass(frozen=True, slots=True)
class Instance:
    id: InstanceId
    bindings: tuple[tuple[str, str], ...]
    image: ImageSpec
    command: tuple[str, ...] | None
    env: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[str, str], ...]
    upstream: tuple[UpstreamMount, ...]
    cpus: float
    memory: int
    retries: Retries
    timeout: float | None
    stdin: InstanceId | None = None
    cacheable: bool = True
    volumes: tuple[tuple[str, str, bool], ...] = ()  # (volume, mount path, read-only)
    services: tuple[str, ...] = ()
    network: bool = False  # the engine's default network (else none, unless services)
    pids: int = DEFAULT_PIDS  # processes and threads at once
    cap_add: tuple[str, ...] = ()  # capabilities beyond the runtime's default few
    # Work handed over while the run goes on (a CWL tool invocation, see dockyard.cwl):
    # (absolute path here, path inside, what it holds when that is known already: part of
    # a committed output, "o:<digest>/<path in it>"; None: hashed for the key)
    files: tuple[tuple[str, str, str | None], ...] = ()  # bound read-only
    seeds: tuple[tuple[str, str, str | None], ...] = ()  # copied under /out (path there)
    out: str = "/out"  # where the output folder is inside the container
    workdir: str | None = None  # None: the image's own
    stdio: tuple[str | None, str | None, str | None] = (None, None, None)  # in, out, err
    success_codes: tuple[int, ...] = (0,)  # exit statuses whose output is committed
    # What runs the same way in every instance and run (the step, its image and command
    # before interpolation): what it used before tells what it reserves (planning.packing).
    usage_key: str = ""

    @property
    def step(self) -> str:
        return self.id.step


@dataclass
class Graph:
    pipeline: str
    instances: dict[InstanceId, Instance]
    order: list[InstanceId]
    downstream: dict[InstanceId, tuple[InstanceId, ...]] = field(repr=False)
    # Instances joined by stdin pipes run, fail and retry together: chain order, producer first.
    groups: Mapping[InstanceId, tuple[InstanceId, ...]] = field(repr=False, default_factory=dict)

    @cached_property
    def priority(self) -> dict[InstanceId, int]:
        """Critical-path rank: the number of instances on the longest path to a sink."""
        rank: dict[InstanceId, int] = {}
        for iid in reversed(self.order):
            rank[iid] = 1 + max((rank[d] for d in self.downstream[iid]), default=0)
        return rank

    def group(self, iid: InstanceId) -> tuple[InstanceId, ...]:
        return self.groups.get(iid, (iid,))

    def add(self, instance: Instance) -> None:
        """One more instance while the run goes on: it reads no other instance's output
        (whoever hands it over waits for what it reads) and nothing waits for it here."""
        if instance.id in self.instances or instance.upstream or instance.stdin is not None:
            raise PlanError(f"{instance.id} cannot join the run: it is there, or reads others")
        self.instances[instance.id] = instance
        self.order.append(instance.id)
        self.downstream[instance.id] = ()
        self.priority[instance.id] = 1  # (one more sink)


def usage_key(*parts: str) -> str:
    """A short digest of what makes work run alike (see :attr:`Instance.usage_key`)."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _key(values: Mapping[str, str], names: list[str]) -> str:
    return ",".join(values[n] for n in names)


def expand(
    pipeline: Pipeline,
    scatter: ScatterValues,
    *,
    sheets: Mapping[str, Mapping[str, Sheet]] | None = None,
    params: Mapping[str, str] | None = None,
) -> Graph:
    """Build the instance graph. ``scatter`` gives each step's resolved scatter values,
    ``sheets`` the rows of its sample sheets (by scatter variable: the other columns of a
    row are bound with its key), ``params`` what each ``${params.NAME}`` renders as.

    Linear in the number of instances: what is the same for every instance of a step is
    worked out once, templates are split once, and an instance finds the upstream
    instances it pairs with through an index, not by scanning them."""
    steps = _topological(pipeline)
    by_step: dict[str, list[tuple[InstanceId, dict[str, str]]]] = {}
    instances: dict[InstanceId, Instance] = {}
    downstream: dict[InstanceId, list[InstanceId]] = {}
    pairing = _Pairing(by_step, scatter)
    params = params or {}
    for name in steps:
        step = pipeline.resolved_step(name)
        values = scatter.get(name, {})
        step_sheets = (sheets or {}).get(name, {})
        _refuse_code_in_values(name, step.command, values, step_sheets, params)
        shape = _StepShape(pipeline, name, params)
        names = list(values)
        by_step[name] = []
        for combo_values in itertools.product(*values.values()):
            combo = dict(zip(names, combo_values, strict=True))
            iid = InstanceId(name, ",".join(combo_values))
            bound = combo
            if step_sheets:
                bound = dict(combo)
                for var, sheet in step_sheets.items():
                    bound.update(sheet.rows[combo[var]])
            mounts = pairing.mounts(name, combo, step.upstream)
            stdin = None
            if step.stdin is not None:
                # The producer runs beside this step, so it has no committed output to mount.
                stdin = next(m.source for m in mounts if m.source.step == step.stdin)
                mounts = tuple(m for m in mounts if m.source != stdin)
            instances[iid] = shape.instance(iid, bound, mounts, stdin)
            downstream[iid] = []
            for mount in mounts:
                downstream[mount.source].append(iid)
            if stdin is not None:
                downstream[stdin].append(iid)
            by_step[name].append((iid, combo))
    order = [iid for name in steps for iid, _ in by_step[name]]
    return Graph(
        pipeline=pipeline.name,
        instances=instances,
        order=order,
        downstream={k: tuple(v) for k, v in downstream.items()},
        groups=_stream_groups(instances, order),
    )


class _StepShape:
    """What every instance of a step shares, and the templates its own parts come from."""

    def __init__(self, pipeline: Pipeline, name: str, params: Mapping[str, str]):
        step = pipeline.resolved_step(name)
        self.params = params
        assert step.resources is not None and step.retries is not None and step.image
        self.step = step
        self.resources = step.resources
        self.retries = step.retries
        self.image = step.image
        self.shell = isinstance(step.command, str)
        self.command = (
            None
            if step.command is None
            else (Template(step.command),)
            if isinstance(step.command, str)
            else tuple(Template(part) for part in step.command)
        )
        self.env = tuple((k, Template(v)) for k, v in sorted(step.env.items()))
        self.inputs = tuple((k, Template(v)) for k, v in sorted(step.inputs.items()))
        # A step that writes a volume has effects beyond /out: rerun it unless it says its
        # result depends only on what the key covers.
        self.cacheable = (
            step.cache if step.cache is not None else all(m.readonly for m in step.volumes.values())
        )
        self.volumes = tuple((v, m.path, m.readonly) for v, m in sorted(step.volumes.items()))
        self.services = tuple(step.services)
        self.cap_add = tuple(step.cap_add or ())
        # (with the parameters its command and env paste in: -t ${params.threads})
        templates = [*(self.command or ()), *(t for _, t in self.env)]
        used = sorted({n for t in templates for n in t.names if n in params})
        self.usage_key = usage_key(
            "step",
            name,
            step.image.model_dump_json(),
            json.dumps(step.command),
            json.dumps([(n, params[n]) for n in used]),
        )

    def instance(
        self,
        iid: InstanceId,
        combo: dict[str, str],
        mounts: tuple[UpstreamMount, ...],
        stdin: InstanceId | None,
    ) -> Instance:
        values = {**self.params, **combo} if self.params else combo
        command: tuple[str, ...] | None = None
        if self.command is not None:
            parts = tuple(t.render(values) for t in self.command)
            command = ("sh", "-c", parts[0]) if self.shell else parts
        return Instance(
            id=iid,
            bindings=tuple(combo.items()),
            image=self.image,
            command=command,
            env=tuple((k, t.render(values)) for k, t in self.env),
            inputs=tuple((k, t.render(values)) for k, t in self.inputs),
            upstream=mounts,
            cpus=self.resources.cpus,
            memory=self.resources.memory,
            retries=self.retries,
            timeout=self.step.timeout,
            stdin=stdin,
            cacheable=self.cacheable,
            volumes=self.volumes,
            services=self.services,
            network=bool(self.step.network),
            pids=self.resources.pids,
            cap_add=self.cap_add,
            usage_key=self.usage_key,
        )


class _Pairing:
    """Which upstream instances an instance mounts: the one it pairs with on the scatter
    variables they share, or, where the upstream step scatters over more, all of those
    (a gather, mounted at ``/in/STEP/<their other values>``)."""

    def __init__(
        self,
        by_step: Mapping[str, list[tuple[InstanceId, dict[str, str]]]],
        scatter: ScatterValues,
    ):
        self.by_step = by_step
        self.scatter = scatter
        self.index: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], list[int]]] = {}

    def mounts(
        self, name: str, combo: dict[str, str], upstream: list[str]
    ) -> tuple[UpstreamMount, ...]:
        mounts: list[UpstreamMount] = []
        for up in upstream:
            up_vars = list(self.scatter.get(up, {}))
            shared = tuple(v for v in up_vars if v in combo)
            found = self._matching(up, shared, tuple(combo[v] for v in shared))
            if not up_vars or (shared and len(shared) == len(up_vars)):
                if len(found) != 1:
                    wanted = ", ".join(f"{v}={combo[v]}" for v in shared)
                    raise PlanError(
                        f"step {name!r} pairs with {up!r} on {wanted}, but {up!r} has "
                        "no instance with that value",
                        step=name,
                    )
                mounts.append(UpstreamMount(found[0][0], f"/in/{up}"))
            else:
                rest = [v for v in up_vars if v not in shared]
                mounts.extend(
                    UpstreamMount(iid, f"/in/{up}/{_key(values, rest)}") for iid, values in found
                )
        return tuple(mounts)

    def _matching(
        self, up: str, shared: tuple[str, ...], wanted: tuple[str, ...]
    ) -> list[tuple[InstanceId, dict[str, str]]]:
        instances = self.by_step[up]
        if not shared:
            return instances
        index = self.index.get((up, shared))
        if index is None:
            index = {}
            for n, (_, values) in enumerate(instances):
                index.setdefault(tuple(values[v] for v in shared), []).append(n)
            self.index[(up, shared)] = index
        return [instances[n] for n in index.get(wanted, ())]


def _refuse_code_in_values(
    step: str,
    command: str | tuple[str, ...] | None,
    values: Mapping[str, tuple[str, ...]],
    sheets: Mapping[str, Sheet],
    params: Mapping[str, str],
) -> None:
    """No value reaches a shell as code, whatever path it took here (the file's checks
    refuse it first, with its line; this is the last line of defence). A parameter or a
    sheet's column may be a path: ``/`` is data there."""
    paths: dict[str, list[str]] = {name: [value] for name, value in params.items()}
    for sheet in sheets.values():
        for row in sheet.rows.values():
            for column, value in row.items():
                paths.setdefault(column, []).append(value)
    for _, script in shell_scripts(command):
        for var in variables(script):
            for value in values.get(var, ()):
                if not_shell_inert(value) is not None:
                    raise PlanError(
                        shell_problem(value, var, "the shell command of this step") or "",
                        step=step,
                    )
            for value in paths.get(var, ()):
                if not_shell_inert(value, paths=True) is not None:
                    raise PlanError(
                        shell_problem(value, var, "the shell command of this step") or "",
                        step=step,
                    )


def _stream_groups(
    instances: Mapping[InstanceId, Instance], order: Sequence[InstanceId]
) -> Mapping[InstanceId, tuple[InstanceId, ...]]:
    """Each streamed instance's chain (producer first); an instance without one is its own
    chain (:meth:`Graph.group`), and has no entry."""
    consumer_of = {i.stdin: iid for iid, i in instances.items() if i.stdin is not None}
    groups: dict[InstanceId, tuple[InstanceId, ...]] = {}
    for iid in consumer_of.values():
        if iid in groups:
            continue
        head = iid
        while (producer := instances[head].stdin) is not None:
            head = producer
        chain = [head]
        while chain[-1] in consumer_of:
            chain.append(consumer_of[chain[-1]])
        for member in chain:
            groups[member] = tuple(chain)
    return groups


def _topological(pipeline: Pipeline) -> list[str]:
    """Steps in dependency order (file order among independent steps), depth first with
    its own stack, so that a chain of thousands of steps needs no recursion."""
    done: list[str] = []
    seen: set[str] = set()
    for name in pipeline.steps:
        if name in seen:
            continue
        seen.add(name)
        pending = [(name, iter(pipeline.steps[name].upstream))]
        while pending:
            step, ups = pending[-1]
            up = next(ups, None)
            if up is None:
                pending.pop()
                done.append(step)
            elif up not in seen:
                seen.add(up)
                pending.append((up, iter(pipeline.steps[up].upstream)))
    return done
