"""A Docker Engine of a test's own, to stop, kill and restart without disturbing anyone.

Each :class:`PrivateEngine` is a ``dockerd`` with its own socket, data-root, exec-root and
pidfile under one short folder (unix socket paths are limited to 108 bytes), in a network
and mount namespace of its own. Both matter: ``dockerd --bridge none`` deletes a ``docker0``
bridge it finds, which in the host's namespace would be the main engine's; and the mounts
an engine makes stay inside its namespace, so nothing is left mounted on the host. A
sleeping process holds the namespaces, so that an engine started again (after a kill)
finds the containers, mounts and shims of the one before, as a restarted host daemon
does. Storage is ``vfs``: no overlay mounts to leak, and the test images are tiny.

``containerd`` runs on its own beside ``dockerd`` (``--containerd=``), as Debian's
``docker.service`` runs it: restarting or killing ``dockerd`` leaves it, and the containers,
running. (A containerd that dockerd starts itself dies with it and, on a host whose init
is slow to reap, blocks the next dockerd, which takes the zombie for a live containerd.)
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
from pathlib import Path

import docker
import docker.errors

from dockyard.runtime.docker import ping_socket
from dockyard.testing.images import ensure_busybox_image

API_VERSION = "1.41"  # Docker 20.10, Debian bookworm's docker.io
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


class PrivateEngine:
    def __init__(self, *, live_restore: bool = False, name: str = "dockyard-test"):
        self.root = Path(tempfile.mkdtemp(prefix="dyd-", dir="/tmp"))
        self.socket = self.root / "sock"
        self.url = f"unix://{self.socket}"
        self.live_restore = live_restore
        self.cgroup_parent = f"/{name}-{self.root.name}"
        self.log = (self.root / "dockerd.log").open("ab")
        (self.root / "daemon.json").write_text(json.dumps({}))  # not the host's settings
        self.containerd_socket = self.root / "containerd.sock"
        (self.root / "containerd.toml").write_text(
            "version = 2\n"
            f'root = "{self.root / "containerd-root"}"\n'
            f'state = "{self.root / "containerd-state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.containerd_socket}"\n'
            '[debug]\n  address = ""\n'
        )
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.daemon: subprocess.Popen[bytes] | None = None
        self._wait_for_namespaces()
        self.containerd = subprocess.Popen(
            self._nsenter("containerd", f"--config={self.root / 'containerd.toml'}"),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )

    # -- the daemon -------------------------------------------------------------------------

    def start(self) -> None:
        """Start dockerd (again) and wait until it answers."""
        if self.daemon is not None and self.daemon.poll() is None:
            raise RuntimeError("the private engine is already running")
        args = [
            "dockerd",
            f"--config-file={self.root / 'daemon.json'}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--containerd={self.containerd_socket}",
            f"--host={self.url}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--storage-driver=vfs",
            f"--cgroup-parent={self.cgroup_parent}",
            "--log-level=info",
        ]
        if self.live_restore:
            args.append("--live-restore")
        self.daemon = subprocess.Popen(
            self._nsenter(*args),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private dockerd did not start; see {self.log.name}")
            time.sleep(0.1)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        """Send ``how`` to dockerd and wait until it has exited."""
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.send_signal(how)
        self.daemon.wait(timeout=STOP_TIMEOUT)

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
            if self.daemon is None or self.daemon.poll() is not None:
                self.start()
            client = self.client()
            for container in client.containers(all=True, quiet=True):
                with contextlib.suppress(docker.errors.APIError):
                    client.remove_container(container["Id"], force=True)
            client.close()
        with contextlib.suppress(Exception):
            self.stop(signal.SIGTERM)
        for process in (self.daemon, self.containerd):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        self._end_namespace()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
        for controller in Path("/sys/fs/cgroup").iterdir():  # dockerd's parent cgroup
            with contextlib.suppress(OSError):
                (controller / self.cgroup_parent.lstrip("/")).rmdir()

    def _end_namespace(self) -> None:
        """End what still lives in the namespaces (shims of killed engines), then the holder."""
        ours = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.holder.pid:
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "mnt") == ours:
                    os.kill(int(entry.name), signal.SIGKILL)
        self.holder.kill()
        self.holder.wait()

    def _nsenter(self, *args: str) -> list[str]:
        return ["nsenter", f"--target={self.holder.pid}", "--net", "--mount", "--", *args]

    def _wait_for_namespaces(self) -> None:
        """The holder needs a moment to unshare: nothing may start in the host's namespaces
        (dockerd --bridge none would delete the host's docker0)."""
        deadline = time.monotonic() + 10
        host = os.readlink("/proc/self/ns/net")
        while True:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{self.holder.pid}/ns/net") != host:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the private engine's namespaces were not made")
            time.sleep(0.02)
