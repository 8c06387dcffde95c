"""dockyard's own cgroups on the engine's host (cgroupfs driver, local engine only).

Two uses, both through the engine's ``cgroup_parent``:

- **Accounting.** Every attempt's container runs under a parent cgroup named for the
  attempt. The engine deletes a container's own cgroup when it exits, but the parent
  stays, and (the hierarchy being hierarchical) its counters hold the container's peak
  memory, CPU time and I/O bytes, exact and without sampling. They are read once when the
  attempt ends; then the parent is removed.
- **A shared CPU quota for a streamed chain.** A chain is scheduled as one unit with the
  sum of its members' CPUs. Capping each member separately stalls the chain: a stage that
  bursts past its own share is paused for the rest of the CFS period while the 64 KiB pipe
  behind it fills. So the members' parents sit in one pool cgroup whose quota is the sum:
  the kernel still enforces the reservation, on the chain as a whole. Memory stays
  limited per container.

Where dockyard cannot see the engine's cgroup tree (a remote engine, the systemd driver),
none of this is used: each container keeps its own quota and usage is not recorded.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "dockyard"
PERIOD_US = 100_000


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float | None = None
    peak_memory: int | None = None
    io_read: int | None = None
    io_write: int | None = None


def _version(root: Path) -> str | None:
    if (root / "cpu" / "cpu.cfs_quota_us").exists():
        return "v1"
    if (root / "cgroup.controllers").exists():
        return "v2"
    return None


def attempt_parent(name: str, pool: str | None = None) -> str:
    """The cgroup parent for one attempt's container (inside a chain's pool, if any)."""
    return f"{pool}/{name}" if pool else f"/{PARENT}/{name}"


def create_pool(name: str, cpus: float, root: Path = ROOT) -> str | None:
    """Create ``/dockyard/NAME`` capped at ``cpus``; return it as a cgroup parent, or None."""
    version = _version(root)
    quota = max(1000, round(cpus * PERIOD_US))
    try:
        if version == "v1":
            path = root / "cpu" / PARENT / name
            path.mkdir(parents=True, exist_ok=True)
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        elif version == "v2":
            for folder in (root, root / PARENT):  # delegate the cpu controller downwards
                folder.mkdir(exist_ok=True)
                (folder / "cgroup.subtree_control").write_text("+cpu")
            path = root / PARENT / name
            path.mkdir(exist_ok=True)
            (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            return None
    except OSError:
        return None
    return f"/{PARENT}/{name}"


def pool_quota(parent: str, root: Path = ROOT) -> float | None:
    """The CPUs a pool allows."""
    rel = parent.lstrip("/")
    if _version(root) == "v1":
        quota = (root / "cpu" / rel / "cpu.cfs_quota_us").read_text().strip()
        period = (root / "cpu" / rel / "cpu.cfs_period_us").read_text().strip()
    elif _version(root) == "v2":
        quota, period = (root / rel / "cpu.max").read_text().split()
    else:
        return None
    return int(quota) / int(period)


def read_usage(parent: str, root: Path = ROOT) -> Usage:
    """What the containers under ``parent`` used; None for whatever cannot be read."""
    rel = parent.lstrip("/")
    if _version(root) == "v1":
        cpu_ns = _int(root / "cpuacct" / rel / "cpuacct.usage")
        peak = _int(root / "memory" / rel / "memory.max_usage_in_bytes")
        io = _blkio(root / "blkio" / rel / "blkio.throttle.io_service_bytes_recursive")
        return Usage(cpu_ns / 1e9 if cpu_ns is not None else None, peak, *io)
    if _version(root) == "v2":
        stat = _keyed(root / rel / "cpu.stat")
        io_read = io_write = None
        with contextlib.suppress(OSError):
            fields = (root / rel / "io.stat").read_text().split()
            io_read = sum(int(f[7:]) for f in fields if f.startswith("rbytes="))
            io_write = sum(int(f[7:]) for f in fields if f.startswith("wbytes="))
        usec = stat.get("usage_usec")
        return Usage(
            usec / 1e6 if usec is not None else None,
            _int(root / rel / "memory.peak"),
            io_read,
            io_write,
        )
    return Usage()


def _tops(root: Path) -> list[Path]:
    if _version(root) == "v2":
        return [root / PARENT]
    return [c / PARENT for c in root.iterdir() if (c / PARENT).is_dir()]


def _rmtree(path: Path) -> None:
    """rmdir a cgroup and its descendants, deepest first; busy ones (EBUSY) stay."""
    if not path.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(path), key=lambda walked: -len(walked[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def remove(parent: str, root: Path = ROOT) -> None:
    """Remove the cgroup ``parent`` (as given to the engine) in every hierarchy."""
    rel = Path(parent.lstrip("/")).relative_to(PARENT)
    for top in _tops(root):
        _rmtree(top / rel)


def sweep(prefix: str, root: Path = ROOT) -> None:
    """Remove dockyard's cgroups whose names start with ``prefix`` (those of runs that
    died, whose containers are gone)."""
    for top in _tops(root):
        for group in top.iterdir() if top.is_dir() else ():
            if group.is_dir() and group.name.startswith(prefix):
                _rmtree(group)


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _keyed(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split() for line in lines if len(line.split()) == 2)}


def _blkio(path: Path) -> tuple[int | None, int | None]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None, None
    read = sum(
        int(p[2]) for p in (line.split() for line in lines) if len(p) == 3 and p[1] == "Read"
    )
    write = sum(
        int(p[2]) for p in (line.split() for line in lines) if len(p) == 3 and p[1] == "Write"
    )
    return read, write
