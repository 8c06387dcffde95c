"""Rolling a volume's live folder back to one of its snapshots: only the files that differ
are copied back (a file the live folder's index vouches for, sharing its inode with the
target's, is left as it is), and the ones the snapshot does not have are deleted."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from dockyard.disk import live_index, safefs
from dockyard.disk.live_index import LiveIndex
from dockyard.disk.volume_copy import mirror
from dockyard.disk.volume_names import Snapshot

if TYPE_CHECKING:
    from dockyard.disk.volumes import VolumeStore


def rollback(store: VolumeStore, name: str, snap: Snapshot, *, quiet: bool = False) -> int:
    """Make the live volume equal to ``snap``; return the bytes copied back. ``quiet``:
    nothing else writes the live folder meanwhile (what this copies is then vouched for
    by the index, not only what it left alone)."""
    store.require(name)
    tree = store.tree(name, snap)
    index = store.indexes.load(store.index_path(name))
    store.indexes.drop(store.index_path(name))
    since = live_index.marker(store.folder(name))
    try:
        with contextlib.ExitStack() as held:
            base = _tree_of(store, name, index, snap, held)
            copied = mirror(tree, store.live(name), live_index.vouches(index, base))
    except safefs.Contended as exc:
        raise safefs.Contended(
            f"volume {name!r}: {exc.message}; a container still writes to it (a "
            "`keep: true` service?): stop it and try again"
        ) from None
    with safefs.opened(store.live(name)) as live:
        index = live_index.scan(live, since)
    if quiet:
        index.settled(store.folder(name))
    index.snapshot = snap.uuid
    store.indexes.save(store.index_path(name), index)
    return copied


def _tree_of(
    store: VolumeStore,
    name: str,
    index: LiveIndex | None,
    snap: Snapshot,
    held: contextlib.ExitStack,
) -> safefs.Folders | None:
    """The tree of the snapshot ``index`` describes, opened, when it is not ``snap`` (for
    :func:`live_index.vouches`); an index of a snapshot that is gone vouches for nothing."""
    if index is None or index.snapshot == snap.uuid:
        return None
    found = next((s for s in store.snapshots(name) if s.uuid == index.snapshot), None)
    if found is None:
        index.entries.clear()
        return None
    folders = safefs.Folders(held.enter_context(safefs.opened(store.tree(name, found))))
    held.callback(folders.close)
    return folders


__all__ = ["rollback"]
