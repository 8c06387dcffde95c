"""One CommandLineTool invocation as a dockyard instance.

cwltool has built the command line, the environment and the map of input files (under
:mod:`dockyard.cwl.staging`'s stable paths); this turns them into an
:class:`~dockyard.planning.graph.Instance` — the files bound read-only where the map
says, the InitialWorkDir listing copied into the output folder before the start, the
standard streams to and from files, the requested cores and memory (clamped to the
largest node, with a warning), the time limit and the success codes — and hands it to
the run. How it ended comes back through :class:`~dockyard.cwl.bridge.Bridge`."""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, MutableSequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cwl_utils.types import CWLDirectoryType, CWLFileType, CWLObjectType
from cwltool.builder import Builder
from cwltool.context import RuntimeContext
from cwltool.errors import UnsupportedRequirement, WorkflowException
from cwltool.job import JobBase
from cwltool.pathmapper import MapperEnt, PathMapper

from dockyard.cwl.images import UnsupportedImage
from dockyard.cwl.locations import local_path
from dockyard.errors import DockyardError
from dockyard.planning.graph import Instance, InstanceId, usage_key
from dockyard.spec.model import DEFAULT_PIDS, ImageSpec, Retries

if TYPE_CHECKING:
    from dockyard.cwl.bridge import Bridge

_logger = logging.getLogger("cwltool")
CONTAINER_TMPDIR = "/tmp"
MIB = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class DockyardJob(JobBase):
    def __init__(
        self,
        bridge: Bridge,
        builder: Builder,
        joborder: CWLObjectType,
        make_path_mapper: Callable[
            [MutableSequence[CWLFileType | CWLDirectoryType], str, RuntimeContext, bool],
            PathMapper,
        ],
        requirements: list[CWLObjectType],
        hints: list[CWLObjectType],
        name: str,
    ) -> None:
        super().__init__(builder, joborder, make_path_mapper, requirements, hints, name)
        self.bridge = bridge
        self.tool_id = ""  # (the tool's CWL id: invocations of a tool run alike)

    def _required_env(self) -> dict[str, str]:
        return {"HOME": self.builder.outdir, "TMPDIR": CONTAINER_TMPDIR}

    def run(
        self, runtimeContext: RuntimeContext, tmpdir_lock: threading.Lock | None = None
    ) -> None:
        """Hand the invocation to the run; it returns at once (see Bridge)."""
        if self.inplace_update:
            raise UnsupportedRequirement(
                f"{self.name}: InplaceUpdateRequirement: dockyard's outputs are immutable "
                "(a tool cannot change a file that an earlier step committed)"
            )
        self._setup(runtimeContext)
        # (the environment, EnvVarRequirement evaluated, was prepared as the job was made)
        requirement, _ = self.get_requirement("DockerRequirement")
        try:
            image = self.bridge.tool_images.key_for(dict(requirement) if requirement else None)
        except UnsupportedImage as exc:
            raise UnsupportedRequirement(f"{self.name}: {exc.message}") from None
        except DockyardError as exc:
            raise WorkflowException(f"{self.name}: {exc.message}") from None
        files, seeds = self._staged(runtimeContext)
        if seeds and not self.bridge.can_seed:
            raise UnsupportedRequirement(
                f"{self.name}: InitialWorkDirRequirement is not supported on a cluster yet "
                "(its entries would be copied into a folder on another node)"
            )
        cores, memory = self._resources()
        reusable = self._reusable()
        if not reusable:
            self.bridge.not_reusable = True
        success = {0, *self.successCodes} - {*self.temporaryFailCodes, *self.permanentFailCodes}
        instance = Instance(
            id=self.bridge.new_id(_UNSAFE.sub("_", self.name) or "tool"),
            bindings=(),
            image=ImageSpec.model_validate(image),
            command=tuple(str(part) for part in self.command_line),
            env=tuple(sorted(self.environment.items())),
            inputs=(),
            upstream=(),
            cpus=cores,
            memory=memory,
            retries=Retries(),
            timeout=float(self.timelimit) if self.timelimit else None,
            cacheable=reusable,
            network=bool(self.networkaccess),
            pids=DEFAULT_PIDS,
            files=files,
            seeds=seeds,
            out=self.builder.outdir,
            workdir=self.builder.outdir,
            stdio=(self.stdin, self._in_outdir(self.stdout), self._in_outdir(self.stderr)),
            success_codes=tuple(sorted(success)),
            usage_key=usage_key("cwl", self.tool_id, image) if self.tool_id else "",
        )
        if not instance.command:
            raise WorkflowException(
                f"{self.name}: the tool's command line is empty (give it a baseCommand, "
                "arguments, or an input with an inputBinding)"
            )
        self.bridge.submit(self, instance)

    # -- what the container gets ------------------------------------------------------------

    def _reusable(self) -> bool:
        """Whether the cache may answer this invocation (``WorkReuse``, default yes)."""
        requirement, _ = self.get_requirement("WorkReuse")
        if not requirement:
            return True
        return bool(self.builder.do_eval(requirement.get("enableReuse", True)))

    def _in_outdir(self, name: str | None) -> str | None:
        if name is None:
            return None
        if os.path.isabs(name) or ".." in Path(name).parts:
            raise WorkflowException(f"{self.name}: {name!r} is not a path in the output folder")
        return name

    def _resources(self) -> tuple[float, int]:
        """The cores and memory the tool asked for, clamped to the largest node."""
        resources = self.builder.resources
        cores = float(max(1, math.ceil(float(resources.get("cores", 1)))))
        memory = math.ceil(float(resources.get("ram", 256))) * MIB
        largest = self.bridge.largest
        if cores > largest.cpus or memory > largest.memory:
            _logger.warning(
                "[job %s] asks for %g cores and %d MiB; the largest node has %g and %d MiB: "
                "it gets at most that",
                self.name,
                cores,
                memory // MIB,
                largest.cpus,
                largest.memory // MIB,
            )
        return min(cores, largest.cpus), min(memory, largest.memory)

    def _staged(
        self, runtimeContext: RuntimeContext
    ) -> tuple[tuple[tuple[str, str, str | None], ...], tuple[tuple[str, str, str | None], ...]]:
        """Read-only binds (path here, path inside) of the inputs, and what is copied into
        the output folder before the start (path here, path under the output folder); each
        with what it holds where a committed output says (see ``Instance.files``)."""
        files: dict[str, str] = {}
        seeds: list[tuple[str, str, str | None]] = []
        outdir = self.builder.outdir
        mappers = [self.pathmapper]
        if self.generatemapper is not None:
            mappers.append(self.generatemapper)
        for mapper in mappers:
            # (what a folder of this machine holds comes with it: those are not staged; a
            # literal folder's entries are, each on its own)
            staged = [entry for _, entry in mapper.items() if entry.staged]
            for entry in staged:
                if _literal_folder(entry) and any(
                    other.target.startswith(entry.target + "/") for other in staged
                ):
                    continue  # a literal folder is made by what it holds
                source = self._source(entry, runtimeContext)
                inside = entry.target == outdir or entry.target.startswith(outdir + "/")
                if inside:
                    rel = entry.target[len(outdir) + 1 :]
                    if not rel:
                        raise UnsupportedRequirement(
                            f"{self.name}: staging {entry.resolved} as the output folder itself"
                        )
                    seeds.append((source, rel, self.bridge.held_by_output(source)))
                elif (entry.type or "").startswith(
                    "Writable"
                ) or entry.type == "CreateWritableFile":
                    raise UnsupportedRequirement(
                        f"{self.name}: a writable file or folder outside the output folder "
                        f"({entry.target}) is not supported"
                    )
                else:
                    files[entry.target] = source
        bound = tuple(
            (source, target, self.bridge.held_by_output(source))
            for target, source in sorted(files.items())
        )
        return bound, tuple(seeds)

    def _source(self, entry: MapperEnt, runtimeContext: RuntimeContext) -> str:
        """The path here of what is staged: a literal's content is written to a file."""
        if _literal_folder(entry):  # (an empty one)
            return tempfile.mkdtemp(prefix="literal", dir=self.bridge.scratch)
        if entry.type in ("CreateFile", "CreateWritableFile"):
            folder = tempfile.mkdtemp(prefix="literal", dir=self.bridge.scratch)
            path = os.path.join(folder, os.path.basename(entry.target))
            with open(path, "w", encoding="utf-8") as literal:
                literal.write(entry.resolved)
            return path
        path = local_path(str(entry.resolved)) or str(entry.resolved)
        if not os.path.exists(path):
            raise WorkflowException(f"{self.name}: input {path} does not exist")
        try:
            self.bridge.check_readable(path)
        except PermissionError as exc:
            raise WorkflowException(f"{self.name}: {exc}") from None
        return os.path.abspath(path)


def _literal_folder(entry: MapperEnt) -> bool:
    return entry.type in ("Directory", "WritableDirectory") and str(entry.resolved).startswith("_:")


def job_runner(bridge: Bridge, tool_id: str) -> Callable[..., Any]:
    """What cwltool calls to make a job (:meth:`CommandLineTool.make_job_runner`) of the
    tool ``tool_id``."""

    def make(*args: Any) -> DockyardJob:
        job = DockyardJob(bridge, *args)
        job.tool_id = tool_id
        return job

    return make


__all__ = ["DockyardJob", "InstanceId", "job_runner"]
