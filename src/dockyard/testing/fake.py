"""An in-memory container runtime for tests of the planner and the reconcile loop.

Containers "run" a tiny shell subset when started (``echo``, ``cat``, ``exit``,
``sleep``, ``true``, ``false``, with ``>``/``>>`` redirection, joined by ``;`` or
``&&``), reading and writing the host directories bound into them, and seeing their
limits where the kernel shows them (``/proc/self/status``, ``pids.max``), so the same
contract tests pass here and on a real engine. Faults (crashes, OOM kills) can be
scheduled per container label.
"""

from __future__ import annotations

import hashlib
import itertools
import shlex
import tarfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from dockyard.errors import EngineUnavailable, ImageError, RuntimeFailure
from dockyard.names import CAPABILITIES
from dockyard.runtime.base import (
    DEFAULT_CAPABILITIES,
    LABEL_INSTANCE,
    LOCAL_NODE,
    ContainerInfo,
    ContainerSpec,
    ExitStatus,
    HostCapacity,
    Node,
)


@dataclass(frozen=True)
class Fault:
    """Make the next matching attempt fail: a crash with ``exit_code``, an OOM kill, or
    the container vanishing (as when an engine restarts without its containers). With
    ``engine_restart``, the engine instead goes away as the attempt starts (see
    :meth:`FakeRuntime.restart_engine`), and the attempt itself would have succeeded."""

    exit_code: int = 1
    oom: bool = False
    lost: bool = False
    engine_restart: bool = False
    live_restore: bool = False
    node_down: bool = False  # its node goes down as it starts (see FakeRuntime.cluster)


@dataclass
class _Container:
    id: str
    spec: ContainerSpec
    state: str = "created"  # created | running | exited
    status: ExitStatus | None = None
    logs: bytes = b""
    duration: float = 0.0


@dataclass
class FakeRuntime:
    cpus: float = 2.0
    memory: int = 8 * 1024**3
    images: dict[str, str] = field(default_factory=dict)
    reachable: bool = True
    # Real seconds slept per simulated second of `sleep` (0: containers finish at once).
    time_scale: float = 0.0
    # Several nodes, as a cluster has (empty: one node, "local", of cpus and memory).
    cluster: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.containers: dict[str, _Container] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.started: list[str] = []
        self.started_instances: list[str] = []  # the dockyard.instance label of each start
        self.network_names: dict[str, dict[str, str]] = {}
        self.labels: dict[str, dict[str, str]] = {}  # image id -> its labels
        self.imported: list[str] = []  # tags made by import_image, in order
        self.created: list[ContainerSpec] = []  # every container asked for, in order
        self.running_now = 0
        self.max_running = 0

    # -- test controls --------------------------------------------------------------------------

    def add_image(
        self, ref: str, image_id: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        self.images[ref] = image_id or f"sha256:{hashlib.sha256(ref.encode()).hexdigest()}"
        self.labels[self.images[ref]] = dict(labels or {})
        return self.images[ref]

    def inject(self, instance: str, *faults: Fault) -> None:
        """Queue faults for the next attempts of ``instance`` (e.g. ``"align[a]"``)."""
        self.faults.setdefault(instance, []).extend(faults)

    def restart_engine(self, *, live_restore: bool = False) -> None:
        """Take the engine away as a restart does: unreachable until ``reachable`` is set
        again; without live-restore, the engine's stop ends every running container as
        SIGTERM does (exit 143)."""
        with self._lock:
            self.reachable = False
            if live_restore:
                return
            for box in self.containers.values():
                if box.state == "running":
                    box.state = "exited"
                    box.status = ExitStatus(143)
                    self.running_now -= 1

    # -- Runtime --------------------------------------------------------------------------------

    def _check(self) -> None:
        if not self.reachable:
            raise EngineUnavailable("cannot reach the fake engine")

    def ping(self) -> None:
        self._check()

    def shares_host_cgroups(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def nodes(self) -> list[Node]:
        with self._lock:
            if self.cluster:
                return list(self.cluster)
        return [Node(LOCAL_NODE, "fake", HostCapacity(self.cpus, self.memory))]

    def capacity(self) -> HostCapacity:
        ready = [n.capacity for n in self.nodes() if n.ready]
        return HostCapacity(sum(c.cpus for c in ready), sum(c.memory for c in ready))

    def set_node_state(self, node_id: str, state: str) -> None:
        """A cluster node goes down (what runs there is lost) or comes back ("ready")."""
        with self._lock:
            self.cluster = [replace(n, state=state) if n.id == node_id else n for n in self.cluster]
            if state == "ready":
                return
            for box in self.containers.values():
                if box.spec.node == node_id and box.state == "running":
                    box.status = ExitStatus(None, error=f"its node {node_id} went down")

    def image_id(self, ref: str) -> str | None:
        self._check()
        return self.images.get(ref)

    def image_labels(self, ref: str) -> Mapping[str, str]:
        return self.labels.get(self.images.get(ref, ref), {})

    def import_image(
        self,
        tarball: Path,
        tag: str,
        labels: Mapping[str, str],
        env: Mapping[str, str],
        command: Sequence[str],
    ) -> str:
        if not tarfile.is_tarfile(tarball):
            raise ImageError(f"importing {tag}: {tarball} is not a tar file")
        self.imported.append(tag)
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        return self.add_image(tag, f"sha256:{digest}", labels)

    def find_image(self, labels: Mapping[str, str]) -> str | None:
        for image, carried in self.labels.items():
            if all(carried.get(k) == v for k, v in labels.items()):
                return image
        return None

    def tag_image(self, image: str, ref: str) -> None:
        self.images[ref] = image

    def remove_image(self, image: str) -> bool:
        if image in self.images.values():
            return False  # still named
        self.labels.pop(image, None)
        return True

    def image_command(self, ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (), ("sh",)

    def health(self, container_id: str) -> str:
        """A started container whose command failed counts as exited, else as healthy."""
        box = self.containers.get(container_id)
        if box is None or box.state != "running" or (box.status and box.status.exit_code):
            return "exited"
        down = {n.id for n in self.cluster if not n.ready}
        return "lost" if box.spec.node in down else "healthy"

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        self.network_names[name] = dict(labels)
        return name

    def remove_network(self, name: str) -> None:
        self.network_names.pop(name, None)

    def networks(self, labels: Mapping[str, str]) -> list[str]:
        return [
            n
            for n, ls in self.network_names.items()
            if all(ls.get(k) == v for k, v in labels.items())
        ]

    def kill(self, container_id: str) -> None:
        box = self.containers.get(container_id)
        if box is not None and box.state == "running":
            box.status = ExitStatus(137)
            box.duration = 0.0  # it ends now, not when its command would have (no timeout)

    def pull(self, ref: str) -> str:
        raise ImageError(f"image {ref!r} is not present on this engine and could not be pulled")

    def build(self, context: Path, tag: str, labels: Mapping[str, str]) -> str:
        if not (context / "Dockerfile").is_file():
            raise ImageError(f"building {context} as {tag} failed: no Dockerfile")
        return self.add_image(tag, labels=labels)

    def create(self, spec: ContainerSpec) -> str:
        self._check()
        image = spec.image
        if image not in self.images and image not in self.images.values():
            raise RuntimeFailure(f"creating a container from {image}: no such image")
        with self._lock:
            cid = f"{next(self._ids):064x}"
            self.containers[cid] = _Container(cid, spec)
            self.created.append(spec)
        return cid

    def start(self, container_id: str) -> None:
        self._check()
        box = self._get(container_id)
        with self._lock:
            box.state = "running"
            self.started.append(container_id)
            self.started_instances.append(box.spec.labels.get(LABEL_INSTANCE, ""))
            self.running_now += 1
            self.max_running = max(self.max_running, self.running_now)
            instance = box.spec.labels.get(LABEL_INSTANCE, "")
            queued = self.faults.get(instance)
            fault = queued.pop(0) if queued else None
        code, out, duration = _Shell(box.spec).run()
        box.logs = out
        box.duration = duration
        if fault is not None and fault.node_down and box.spec.node is not None:
            self.set_node_state(box.spec.node, "down")
        elif fault is None or fault.engine_restart:
            box.status = ExitStatus(code)
            if fault is not None:
                self.restart_engine(live_restore=fault.live_restore)
        elif fault.lost:
            box.status = ExitStatus(None, error="the container disappeared")
        else:
            box.status = ExitStatus(137 if fault.oom else fault.exit_code, oom_killed=fault.oom)

    def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus:
        self._check()
        box = self._get(container_id)
        status = box.status or ExitStatus(None, error="never started")
        duration = box.duration
        if timeout is not None and box.duration > timeout:
            status = ExitStatus(137, timed_out=True)
            duration = timeout
        if self.time_scale and box.state == "running":
            time.sleep(duration * self.time_scale)
        with self._lock:
            if box.state == "running":
                self.running_now -= 1
            box.state = "exited"
        return status

    def logs(self, container_id: str) -> bytes:
        return self.containers[container_id].logs if container_id in self.containers else b""

    def remove(self, container_id: str) -> None:
        self._check()
        with self._lock:
            box = self.containers.pop(container_id, None)
            if box is not None and box.state == "running":
                self.running_now -= 1

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        self._check()
        with self._lock:
            boxes = list(self.containers.values())
        return [
            ContainerInfo(b.id, b.spec.name or b.id[:12], b.spec.labels, b.state)
            for b in boxes
            if all(b.spec.labels.get(k) == v for k, v in labels.items())
        ]

    def inspect(self, container_id: str) -> ContainerInfo | None:
        self._check()
        box = self.containers.get(container_id)
        if box is None:
            return None
        return ContainerInfo(box.id, box.spec.name or box.id[:12], box.spec.labels, box.state)

    def _get(self, container_id: str) -> _Container:
        try:
            return self.containers[container_id]
        except KeyError:
            raise RuntimeFailure(f"no such container {container_id[:12]}") from None


class _Shell:
    """Just enough of ``sh -c`` for tests: see the module docstring."""

    def __init__(self, spec: ContainerSpec):
        self.spec = spec
        self.out = bytearray()
        self.duration = 0.0

    def run(self) -> tuple[int, bytes, float]:
        argv = list(self.spec.command or ())
        script = argv[2] if argv[:2] == ["sh", "-c"] and len(argv) == 3 else shlex.join(argv)
        code = 0
        for sequence in script.split(";"):
            for part in sequence.split("&&"):
                words = shlex.split(part)
                if not words:
                    continue
                if words[0] == "exit":
                    return (
                        (int(words[1]) if len(words) > 1 else code),
                        bytes(self.out),
                        self.duration,
                    )
                code = self._command(words)
                if code != 0:
                    break
        return code, bytes(self.out), self.duration

    def _command(self, words: list[str]) -> int:
        target, append = None, False
        for op in (">>", ">"):
            if op in words:
                i = words.index(op)
                target, append = words[i + 1], op == ">>"
                words = words[:i]
                break
        name, args = words[0], words[1:]
        if name == "sleep":
            self.duration += float(args[0])
            return 0
        if name in ("true", "false"):
            return 0 if name == "true" else 1
        if name == "echo":
            data = (" ".join(args) + "\n").encode()
        elif name == "cat":
            try:
                data = b"".join(self._virtual(a) or self._host(a)[0].read_bytes() for a in args)
            except OSError as exc:
                self.out += f"cat: {exc.strerror}\n".encode()
                return 1
        else:
            self.out += f"sh: {name}: not found\n".encode()
            return 127
        if target is None:
            self.out += data
            return 0
        path, readonly = self._host(target)
        try:
            if readonly:
                raise OSError(30, "Read-only file system")
            with path.open("ab" if append else "wb") as fh:
                fh.write(data)
        except OSError as exc:
            self.out += f"sh: can't create {target}: {exc.strerror}\n".encode()
            return 1
        return 0

    def _virtual(self, container_path: str) -> bytes | None:
        """What the kernel shows a container of this spec about its limits, or None."""
        if container_path == "/proc/self/status":
            granted = {*DEFAULT_CAPABILITIES, *self.spec.cap_add}
            mask = sum(1 << bit for bit, cap in enumerate(CAPABILITIES) if cap in granted)
            return f"Name:\tcat\nCapEff:\t{mask:016x}\nNoNewPrivs:\t1\n".encode()
        if container_path in ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"):
            return f"{self.spec.pids or 'max'}\n".encode()
        return None

    def _host(self, container_path: str) -> tuple[Path, bool]:
        path = PurePosixPath(container_path)
        for bind in sorted(self.spec.binds, key=lambda b: -len(b.target)):
            target = PurePosixPath(bind.target)
            if path == target or target in path.parents:
                return Path(bind.source) / path.relative_to(target), bind.readonly
        return Path("/nonexistent-in-fake") / path.relative_to("/"), True
