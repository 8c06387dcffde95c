"""A shared CPU quota for the members of a streamed chain (cgroupfs driver, local engine).

A chain is scheduled as one unit with the sum of its members' CPUs. Capping each member
separately makes the chain stall: a stage that bursts past its own share is paused for
the rest of the CFS period while the 64 KiB pipe behind it fills. So the members share
one parent cgroup whose quota is the sum: the kernel still enforces the reservation,
on the chain as a whole. Memory stays limited per container.

Only where dockyard can see the engine's cgroup tree: a local engine with the cgroupfs
driver (cgroup v1 or v2). Elsewhere :func:`create_pool` returns None and each member
keeps its own quota.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "dockyard"
PERIOD_US = 100_000


def _layout() -> tuple[str, Path] | None:
    if (ROOT / "cpu" / "cpu.cfs_quota_us").exists():
        return "v1", ROOT / "cpu"
    if (ROOT / "cgroup.controllers").exists():
        return "v2", ROOT
    return None


def create_pool(name: str, cpus: float) -> str | None:
    """Create ``/dockyard/NAME`` capped at ``cpus``; return it as a cgroup parent, or None."""
    layout = _layout()
    if layout is None:
        return None
    version, base = layout
    quota = max(1000, round(cpus * PERIOD_US))
    path = base / PARENT / name
    try:
        if version == "v2":
            # The cpu controller must be delegated down to the pool.
            for folder in (base, base / PARENT):
                folder.mkdir(exist_ok=True)
                (folder / "cgroup.subtree_control").write_text("+cpu")
            path.mkdir(exist_ok=True)
            (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
    except OSError:
        return None
    return f"/{PARENT}/{name}"


def pool_quota(parent: str) -> float | None:
    """The CPUs a pool allows (for tests and reports)."""
    layout = _layout()
    if layout is None:
        return None
    version, base = layout
    path = base / parent.lstrip("/")
    if version == "v2":
        quota, period = (path / "cpu.max").read_text().split()
    else:
        quota = (path / "cpu.cfs_quota_us").read_text().strip()
        period = (path / "cpu.cfs_period_us").read_text().strip()
    return int(quota) / int(period)


def remove_pools(prefix: str) -> None:
    """Remove the empty pools whose names start with ``prefix`` (busy ones stay)."""
    layout = _layout()
    if layout is None:
        return
    folder = layout[1] / PARENT
    if not folder.is_dir():
        return
    for pool in folder.iterdir():
        if pool.is_dir() and pool.name.startswith(prefix):
            with contextlib.suppress(OSError):  # EBUSY: a container still lives in it
                os.rmdir(pool)
