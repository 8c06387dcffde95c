"""``dockyard volume ...``: named volumes and their snapshots, through the backend's
volume port (no engine needed). What only some backends offer (rollback, send and receive
on one machine; where each volume is and moves on a cluster) is asked of the interface
that offers it (:class:`VolumeHistory`, :class:`PlacedVolumes`), never of a backend by
name."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import cast

import click
from rich.table import Table

from dockyard.backends.choice import choose
from dockyard.cli.app import cli, err, out
from dockyard.disk.volumes import check_name, check_ref, check_tag
from dockyard.errors import UnknownReference
from dockyard.execution.ports import PlacedVolumes, VolumeBackend, VolumeHistory
from dockyard.units import format_memory


@cli.group()
@click.option(
    "--backend", help="Whose volumes: local (the default) or swarm; or set DOCKYARD_BACKEND."
)
@click.pass_context
def volume(ctx: click.Context, backend: str | None) -> None:
    """Named volumes (this machine's under $DOCKYARD_HOME, or the swarm's) and their
    snapshots."""
    ctx.obj = choose(backend).volumes()


def volumes() -> VolumeBackend:
    """The backend the ``volume`` group chose."""
    return cast(VolumeBackend, click.get_current_context().obj)


def history(backend: VolumeBackend, what: str) -> VolumeHistory:
    """``backend``'s snapshots kept all in reach (one machine's), or a usage error."""
    if not isinstance(backend, VolumeHistory):
        raise click.UsageError(
            f"`dockyard volume {what}` works on this machine's volumes (--backend local); on "
            "a swarm, a volume's snapshots are taken and moved by the node agents (see "
            "docs/swarm.md)"
        )
    return backend


def placing(backend: VolumeBackend, what: str) -> PlacedVolumes:
    """``backend``'s volumes as they live on a cluster's nodes, or a usage error."""
    if not isinstance(backend, PlacedVolumes):
        raise click.UsageError(
            f"`dockyard volume {what}` works on a swarm's volumes, which move between its "
            "nodes: use --backend swarm"
        )
    return backend


def existing(name: str) -> VolumeBackend:
    """The backend, once it is known to have volume ``name`` (a refused command leaves
    nothing behind)."""
    backend = volumes()
    if not backend.exists(check_name(name)):
        raise UnknownReference(f"no volume {name!r} (see `dockyard volume ls`)")
    return backend


@volume.command("ls")
def volume_ls() -> None:
    """List the volumes (on the swarm: where each is, its lease and its replicas)."""
    backend = volumes()
    if isinstance(backend, PlacedVolumes):
        _placed_ls(backend)
        return
    table = Table(box=None, header_style="bold")
    for column in ("volume", "files", "size", "snapshots", "path"):
        table.add_column(column, no_wrap=column != "path")
    for info in volumes().all():
        table.add_row(
            info.name,
            str(info.files),
            format_memory(info.bytes) if info.bytes else "0",
            str(info.snapshots),
            info.path,
        )
    out.print(table)


@volume.command("inspect")
@click.argument("name")
def volume_inspect(name: str) -> None:
    """Print a volume's details as JSON."""
    backend = existing(name)
    info = asdict(backend.inspect(name))
    if isinstance(backend, PlacedVolumes):
        placed = backend.placement(name)
        info["lease"] = {
            "owner": placed.node,
            "mounted": placed.mounted,
            "epoch": placed.epoch,
            "snapshot": placed.snapshot,
            "published": placed.published,
        }
        info["replicas"] = list(placed.replicas)
        info["replication_lag_seconds"] = round(placed.lag, 1)
    info["snapshots"] = [asdict(s) for s in backend.snapshots(name)]
    click.echo(json.dumps(info, indent=2))


@volume.command("move")
@click.argument("name")
@click.argument("node")
def volume_move(name: str, node: str) -> None:
    """Put a swarm volume on NODE (its id, or its host name) ahead of its next user there:
    its latest snapshot is copied there (only what the node lacks) and its lease handed
    over. Refused while the volume is mounted elsewhere."""
    backend = placing(existing(name), "move")
    target = backend.node(node)
    placed = backend.move(name, target)
    click.echo(
        f"volume {name} is on node {_node_name(backend, target)} (lease epoch {placed.epoch})"
    )


def _placed_ls(backend: PlacedVolumes) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("volume", "node", "mounted", "epoch", "replicas", "lag", "published"):
        table.add_column(column, no_wrap=True)
    for placed in backend.placements():
        table.add_row(
            placed.volume,
            _node_name(backend, placed.node) if placed.node else "-",
            "yes" if placed.mounted else "no",
            str(placed.epoch),
            ", ".join(_node_name(backend, n) for n in placed.replicas) or "-",
            f"{placed.lag:.0f} s" if placed.lag else "-",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(placed.published))
            if placed.published
            else "-",
        )
    out.print(table)


def _node_name(backend: PlacedVolumes, node: str) -> str:
    return backend.node_names().get(node) or node[:12]


@volume.command("rm")
@click.argument("name")
def volume_rm(name: str) -> None:
    """Delete a volume and its snapshots (refused while a run uses it)."""
    existing(name).remove(name)
    click.echo(f"removed volume {name}")


@volume.command("snapshot")
@click.argument("name")
@click.option("--tag", help="A name for the snapshot (unique, not a number).")
def volume_snapshot(name: str, tag: str | None) -> None:
    """Freeze the volume's current content."""
    if tag is not None:
        check_tag(tag)  # before the lock: a refused command leaves nothing behind
    backend = existing(name)
    with backend.hold(name, exclusive=True):
        snap = backend.snapshot(name, tag)
    click.echo(
        f"snapshot {snap.id}{f' ({tag})' if tag else ''} of {name}: {snap.files} files, "
        f"{format_memory(snap.copied_bytes) if snap.copied_bytes else '0'} copied"
    )


@volume.command("snapshots")
@click.argument("name")
def volume_snapshots(name: str) -> None:
    """List a volume's snapshots."""
    table = Table(box=None, header_style="bold")
    for column in ("id", "tag", "created", "files", "size", "copied"):
        table.add_column(column, no_wrap=True)
    for snap in existing(name).snapshots(name):
        table.add_row(
            str(snap.id),
            snap.tag or "",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.created)),
            str(snap.files),
            format_memory(snap.bytes) if snap.bytes else "0",
            format_memory(snap.copied_bytes) if snap.copied_bytes else "0",
        )
    out.print(table)


@volume.command("rollback")
@click.argument("name")
@click.argument("snapshot")
def volume_rollback(name: str, snapshot: str) -> None:
    """Make the volume's content what it was at SNAPSHOT (an id or a tag)."""
    check_ref(snapshot)  # before the lock: a refused command leaves nothing behind
    backend = existing(name)
    kept = history(backend, "rollback")
    with backend.hold(name, exclusive=True):
        copied = kept.rollback(name, snapshot)
    click.echo(f"rolled {name} back to snapshot {snapshot} ({copied} bytes copied back)")


@volume.command("send")
@click.argument("name")
@click.option("--from", "base", help="Send only the changes since this snapshot.")
@click.option("--to", "target", help="The snapshot to send (default: the latest).")
def volume_send(name: str, base: str | None, target: str | None) -> None:
    """Write a snapshot (or the increment between two) to stdout."""
    if sys.stdout.isatty():
        raise click.UsageError("the stream is binary: redirect it to a file or a pipe")
    records, size = history(existing(name), "send").send(name, sys.stdout.buffer, base, target)
    sys.stdout.buffer.flush()
    err.print(f"sent {records} records, {size} bytes")


@volume.command("receive")
@click.argument("name")
def volume_receive(name: str) -> None:
    """Apply a stream from `volume send` on stdin, all or nothing."""
    snap = history(volumes(), "receive").receive(name, sys.stdin.buffer)
    click.echo(
        f"received snapshot {snap.id} of {name} ({snap.files} files); the volume now holds it"
    )
