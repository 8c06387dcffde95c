"""A Docker Engine of a test's own, to stop, kill and restart without disturbing anyone.

Each :class:`PrivateEngine` is a ``dockerd`` with its own socket, data-root, exec-root and
pidfile under one short folder (unix socket paths are limited to 108 bytes), in a network
and mount namespace of its own (and, for a Swarm node, a host name of its own). Both matter:
``dockerd --bridge none`` deletes a ``docker0`` bridge it finds, which in the host's
namespace would be the main engine's; and the mounts an engine makes stay inside its
namespace, so nothing is left mounted on the host. A sleeping process holds the namespaces,
so that an engine started again (after a kill) finds the containers, mounts and shims of the
one before, as a restarted host daemon does. Storage is ``vfs``: no overlay mounts to leak,
and the test images are tiny.

``containerd`` runs on its own beside ``dockerd`` (``--containerd=``), as Debian's
``docker.service`` runs it: restarting or killing ``dockerd`` leaves it, and the containers,
running. (A containerd that dockerd starts itself dies with it and, on a host whose init
is slow to reap, blocks the next dockerd, which takes the zombie for a live containerd.)

Every process is kept as a :class:`Process` (PID and start time), and an engine can be
written to and read from JSON (:meth:`PrivateEngine.state`, :meth:`PrivateEngine.adopt`):
``scripts/swarm-local.sh down`` ends, from another process, engines that ``up`` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from dockyard.backends.local.runtime import ping_socket
from dockyard.testing.images import ensure_busybox_image

API_VERSION = "1.41"  # Docker 20.10, Debian bookworm's docker.io
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # started by this process: reaped here


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """A process's state letter and start time (in clock ticks since boot), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()  # the name may hold spaces and parentheses
    return fields[0], fields[19]  # fields 3 (state) and 22 (starttime) of proc(5)


@dataclass(frozen=True)
class Process:
    """A process this harness started, by PID and start time, so that a PID the kernel has
    given to another process since is never signalled; usable from another process than the
    one that started it."""

    pid: int
    started: str

    @classmethod
    def spawn(cls, args: Sequence[str], log: IO[bytes] | None = None) -> Process:
        # (never this process's own output: a caller that reads it to its end, as
        # ``nodes=$(scripts/swarm-local.sh up)`` does, would wait for the daemons to end)
        sink = log if log is not None else subprocess.DEVNULL
        child = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True
        )
        _CHILDREN[child.pid] = child
        stat = _proc_stat(child.pid)
        return cls(child.pid, stat[1] if stat else "")

    def alive(self) -> bool:
        child = _CHILDREN.get(self.pid)
        if child is not None:
            return child.poll() is None
        stat = _proc_stat(self.pid)
        return stat is not None and stat[0] != "Z" and stat[1] == self.started

    def send(self, how: signal.Signals) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, how)

    def wait(self, timeout: float) -> bool:
        """Whether it has ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        child = _CHILDREN.pop(self.pid, None)
        if child is not None:
            child.wait()
        return True

    def end(self, how: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """Signal it, wait, and kill it if it does not end in time."""
        self.send(how)
        if not self.wait(timeout):
            self.send(signal.SIGKILL)
            self.wait(timeout)


NODE_RUN_DOCKER = "/run/docker"  # (in a node's own mount namespace: see PrivateEngine)
NODE_ENGINE_SOCKET = f"{NODE_RUN_DOCKER}/engine.sock"


class PrivateEngine:
    def __init__(
        self,
        *,
        live_restore: bool = False,
        name: str = "dockyard-test",
        hostname: str | None = None,
        _adopted: dict[str, Any] | None = None,
    ):
        if _adopted is not None:
            self._read(_adopted)
            return
        self.root = Path(tempfile.mkdtemp(prefix="dyd-", dir="/tmp"))
        self.live_restore = live_restore
        self.hostname = hostname
        self.cgroup_parent = f"/{name}-{self.root.name}"
        self._paths()
        (self.root / "daemon.json").write_text(json.dumps({}))  # not the host's settings
        (self.root / "containerd.toml").write_text(
            "version = 2\n"
            f'root = "{self.root / "containerd-root"}"\n'
            f'state = "{self.root / "containerd-state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.containerd_socket}"\n'
            '[debug]\n  address = ""\n'
        )
        own = ["--net", "--mount", "--propagation", "private"]
        if hostname is not None:
            own.insert(0, "--uts")
        self.holder = Process.spawn(["unshare", *own, "sleep", "infinity"])
        self.daemon: Process | None = None
        self._wait_for_namespaces()
        if hostname is not None:
            subprocess.run(self.nsenter("hostname", hostname), check=True)
            # A node's own /run/docker, as a machine has: where its engine looks for
            # plugins' sockets (dockyard's volume plugin), and a second socket of its
            # engine at the same path on every node (for the agents of managers).
            os.makedirs(NODE_RUN_DOCKER, exist_ok=True)
            mount = ("mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", "tmpfs", NODE_RUN_DOCKER)
            subprocess.run(self.nsenter(*mount), check=True)
            subprocess.run(self.nsenter("mkdir", "-m", "0700", f"{NODE_RUN_DOCKER}/plugins"))
        with self._log() as log:
            self.containerd = Process.spawn(
                self.nsenter("containerd", f"--config={self.root / 'containerd.toml'}"), log
            )

    def _paths(self) -> None:
        self.socket = self.root / "sock"
        self.url = f"unix://{self.socket}"
        self.containerd_socket = self.root / "containerd.sock"

    def _log(self) -> IO[bytes]:
        return (self.root / "dockerd.log").open("ab")

    # -- kept in a file, for another process -------------------------------------------------

    def state(self) -> dict[str, Any]:
        processes = {"holder": self.holder, "containerd": self.containerd, "daemon": self.daemon}
        return {
            "root": str(self.root),
            "live_restore": self.live_restore,
            "hostname": self.hostname,
            "cgroup_parent": self.cgroup_parent,
            **{k: None if p is None else [p.pid, p.started] for k, p in processes.items()},
        }

    @classmethod
    def adopt(cls, state: dict[str, Any]) -> PrivateEngine:
        """The engine that :meth:`state` described, as another process sees it."""
        return cls(_adopted=state)

    def _read(self, state: dict[str, Any]) -> None:
        self.root = Path(state["root"])
        self.live_restore = bool(state["live_restore"])
        self.hostname = state["hostname"]
        self.cgroup_parent = str(state["cgroup_parent"])
        self._paths()
        self.holder = Process(*state["holder"])
        self.containerd = Process(*state["containerd"])
        self.daemon = Process(*state["daemon"]) if state["daemon"] else None

    # -- the daemon -------------------------------------------------------------------------

    def start(self, *extra: str) -> None:
        """Start dockerd (again) and wait until it answers."""
        if self.daemon is not None and self.daemon.alive():
            raise RuntimeError("the private engine is already running")
        args = [
            "dockerd",
            f"--config-file={self.root / 'daemon.json'}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.pidfile}",
            f"--containerd={self.containerd_socket}",
            f"--host={self.url}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--storage-driver=vfs",
            f"--cgroup-parent={self.cgroup_parent}",
            "--log-level=info",
            *extra,
        ]
        if self.live_restore:
            args.append("--live-restore")
        if self.hostname is not None:  # (a swarm node: see __init__)
            args.append(f"--host=unix://{NODE_ENGINE_SOCKET}")
        with self._log() as log:
            self.daemon = Process.spawn(self.nsenter(*args), log)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if not self.daemon.alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the private dockerd did not start; see {self.root}/dockerd.log"
                )
            time.sleep(0.1)

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        """Send ``how`` to dockerd and wait until it has exited."""
        if self.daemon is not None:
            self.daemon.end(how)

    def answers(self) -> bool:
        try:
            ping_socket(str(self.socket), timeout=5)
        except OSError:
            return False
        return True

    def client(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.url, version=API_VERSION)

    def load_busybox(self) -> None:
        client = self.client()
        try:
            ensure_busybox_image(client)
        finally:
            client.close()

    # -- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every container, stop dockerd and the namespaces, delete the folder."""
        with contextlib.suppress(Exception):
            if self.daemon is None or not self.daemon.alive():
                self.start()
            client = self.client()
            for container in client.containers(all=True, quiet=True):
                with contextlib.suppress(docker.errors.APIError):
                    client.remove_container(container["Id"], force=True)
            client.close()
        self.stop(signal.SIGTERM)
        for process in (self.daemon, self.containerd):
            if process is not None:
                process.end(signal.SIGKILL, timeout=10)
        self._end_namespace()
        shutil.rmtree(self.root, ignore_errors=True)
        for controller in Path("/sys/fs/cgroup").iterdir():  # dockerd's parent cgroup
            with contextlib.suppress(OSError):
                (controller / self.cgroup_parent.lstrip("/")).rmdir()

    def _end_namespace(self) -> None:
        """End what still lives in the namespaces (shims of killed engines), then the holder."""
        if self.holder.alive():
            with contextlib.suppress(OSError):
                ours = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
                # (never the host's: a holder that failed to unshare must not take it down)
                if ours != os.readlink("/proc/self/ns/mnt"):
                    for entry in Path("/proc").iterdir():
                        if not entry.name.isdigit() or int(entry.name) == self.holder.pid:
                            continue
                        with contextlib.suppress(OSError):
                            if os.readlink(entry / "ns" / "mnt") == ours:
                                os.kill(int(entry.name), signal.SIGKILL)
        self.holder.end(signal.SIGKILL, timeout=10)

    def nsenter(self, *args: str) -> list[str]:
        """A command line that runs ``args`` in this engine's namespaces."""
        spaces = ["--uts"] if self.hostname is not None else []
        return ["nsenter", f"--target={self.holder.pid}", *spaces, "--net", "--mount", "--", *args]

    def _wait_for_namespaces(self) -> None:
        """The holder needs a moment to unshare: nothing may start in the host's namespaces
        (dockerd --bridge none would delete the host's docker0)."""
        wait_unshared(self.holder.pid, "the private engine's")


def wait_unshared(pid: int, whose: str) -> None:
    """Wait until process ``pid`` is in a network namespace of its own (``unshare`` takes a
    moment); raise after 10 s."""
    deadline = time.monotonic() + 10
    host = os.readlink("/proc/self/ns/net")
    while True:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/ns/net") != host:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{whose} namespaces were not made")
        time.sleep(0.02)
