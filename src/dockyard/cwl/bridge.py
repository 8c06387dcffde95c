"""Between cwltool's workflow engine and a dockyard run: the run's feed.

cwltool evaluates the workflow on one driver thread; each tool invocation it makes is
handed over here (:meth:`Bridge.submit`) and the run's loop takes it at its next turn.
When the run concludes an instance, the loop reports it (:meth:`ended`, on its thread);
the driver thread takes the report (:meth:`next_ended`), reads the committed output as
the tool's output directory (its globs, ``cwl.output.json``) and tells cwltool, which may
then hand over what was waiting for it. The run ends once nothing runs and the driver has
closed the feed.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.cwl.images import ToolImages
from dockyard.cwl.staging import escapes
from dockyard.execution.feed import Ended
from dockyard.planning.graph import Instance, InstanceId
from dockyard.planning.schedule import Capacity

if TYPE_CHECKING:
    from dockyard.cwl.job import DockyardJob


class Stopped(Exception):
    """The run ended before the work it was handed did (an engine away too long, an
    interrupt)."""


class Bridge:
    def __init__(
        self,
        images: ToolImages,
        largest: Callable[[], Capacity],
        state_dir: Path,
        scratch: Path,
        locate: Callable[[str], Path],
    ):
        self.tool_images = images
        self._largest_of = largest  # the largest node's room (asked once, when needed)
        self._largest: Capacity | None = None
        self.state_dir = os.path.realpath(state_dir)
        self.scratch = scratch  # this run's literal files
        self.locate = locate  # a committed output's folder on this machine
        self.wake: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._handed: list[Instance] = []
        self._open = True
        self._jobs: dict[InstanceId, DockyardJob] = {}
        self._ids: set[InstanceId] = set()
        self._ended: queue.Queue[Ended | None] = queue.Queue()
        self.staged: set[str] = set()  # every file of this machine a tool was given
        self.can_seed = True  # whether the backend copies files into an output folder
        self.not_reusable = False  # a tool said its work must not be reused (WorkReuse)

    # -- the run's side (its loop's thread) -----------------------------------------------------

    @property
    def images(self) -> dict[str, str]:
        return self.tool_images.resolved

    def take(self) -> list[Instance]:
        with self._lock:
            taken, self._handed = self._handed, []
        return taken

    def open(self) -> bool:
        with self._lock:
            return self._open or bool(self._handed)

    def ended(self, ended: Ended) -> None:
        self._ended.put(ended)

    # -- the driver's side ------------------------------------------------------------------

    @property
    def largest(self) -> Capacity:
        with self._lock:
            if self._largest is None:
                self._largest = self._largest_of()
            return self._largest

    def new_id(self, name: str) -> InstanceId:
        """A name for the next invocation of ``name`` (a tool run again, or scattered,
        gets ``name[2]``, ``name[3]``, ...)."""
        with self._lock:
            iid, n = InstanceId(name), 1
            while iid in self._ids:
                n += 1
                iid = InstanceId(name, str(n))
            self._ids.add(iid)
        return iid

    def submit(self, job: DockyardJob, instance: Instance) -> None:
        with self._lock:
            if not self._open:
                raise Stopped("the run has ended")
            self._jobs[instance.id] = job
            self._handed.append(instance)
            self.staged.update(path for path, *_ in (*instance.files, *instance.seeds))
        self.wake()

    def waiting(self) -> int:
        """How many handed-over invocations have not been reported on yet."""
        with self._lock:
            return len(self._jobs)

    def next_ended(self) -> tuple[DockyardJob, Ended]:
        """Wait for the next invocation to end; :class:`Stopped` if the run ended first."""
        ended = self._ended.get()
        if ended is None:
            raise Stopped("the run ended before its work did")
        with self._lock:
            job = self._jobs.pop(ended.instance)
        return job, ended

    def close(self) -> None:
        """Nothing more will be handed over."""
        with self._lock:
            self._open = False
        self.wake()

    def stop(self) -> None:
        """The run is over: a driver waiting for a report stops waiting."""
        with self._lock:
            self._open = False
        self._ended.put(None)

    # -- what a job reads ---------------------------------------------------------------------

    def output_folder(self, ended: Ended) -> Path:
        """The committed output of an invocation, checked: no link in it leads outside it
        (what a later tool binds, cwltool reads and the final outputs copy, stays in)."""
        assert ended.output is not None
        folder = self.locate(ended.output)
        bad = escapes(folder)
        if bad is not None:
            raise PermissionError(
                f"the output of {ended.instance} has a link that leads outside it: {bad}"
            )
        return folder

    def held_by_output(self, path: str) -> str | None:
        """What a file or folder in a committed output holds, by that output's digest and
        its path in it (``o:<digest>/<path>``: the output's digest fixes its content);
        None for a path elsewhere."""
        outputs = os.path.join(self.state_dir, "outputs") + os.sep
        real = os.path.realpath(path)
        return f"o:{real[len(outputs) :]}" if real.startswith(outputs) else None

    def check_readable(self, path: str) -> None:
        """A file to bind: inside dockyard's state folder only what a committed output
        holds (checked when it was read), never its database or work folders."""
        real = os.path.realpath(path)
        state = self.state_dir
        if real == state or state.startswith(real + os.sep) or real == os.sep:
            raise PermissionError(f"{path} holds dockyard's state folder")
        if real.startswith(state + os.sep):
            outputs = os.path.join(state, "outputs") + os.sep
            if not real.startswith(outputs):
                raise PermissionError(f"{path} is inside dockyard's state folder")
