"""Resolving a unit whose upstreams have all succeeded: its members' cache keys, whether
the cache answers them, and whether a dead run left a container that does their work.

The answers go to the planner, which decides (reuse, adopt, or start); this module only
looks things up. A key covers the image's content digest, the command, the env, the
content of the inputs, the digests of the upstream outputs, the read-only volumes' content
and, for a streamed consumer, its producer's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dockyard.errors import PlanError
from dockyard.execution.ports import OutputStore
from dockyard.execution.run_volumes import RunVolumes
from dockyard.images.resolve import image_key
from dockyard.planning.actions import Orphan, Resolution
from dockyard.planning.graph import Graph, InstanceId
from dockyard.planning.keys import cache_key
from dockyard.spec.paths import InputPaths
from dockyard.state.hashing import InputHasher, NotData
from dockyard.state.store import Store

Unit = tuple[InstanceId, ...]
REUSABLE = Resolution(reusable=True, orphans={})


@dataclass
class Known:
    """What the run has learned so far: keys, and the output of each succeeded instance."""

    keys: dict[InstanceId, str] = field(default_factory=dict)
    outputs: dict[InstanceId, str] = field(default_factory=dict)  # instance -> digest


class Resolver:
    def __init__(
        self,
        graph: Graph,
        images: Mapping[str, str],
        hasher: InputHasher,
        volumes: RunVolumes,
        store: Store,
        outputs: OutputStore,
        known: Known,
        input_path: InputPaths,
    ):
        self.graph = graph
        self.images = images
        self.hasher = hasher
        self.volumes = volumes
        self.store = store
        self.outputs = outputs
        self.known = known
        self.input_path = input_path
        self.hits: dict[InstanceId, str] = {}  # reusable outputs, until reused
        self.orphans: dict[str, list[Orphan]] = {}  # dead runs' containers by cache key
        self.image_ids: dict[int, str] = {}

    def resolve(self, units: Sequence[Unit], *, cache: bool) -> list[Resolution]:
        """Each unit's keys, and whether the cache (asked about them all at once) or a dead
        run answers it."""
        for unit in units:
            for iid in unit:
                self.known.keys[iid] = self._key(iid)
        asked = [u for u in units if cache and all(self.graph.instances[m].cacheable for m in u)]
        entries = self.store.cache_entries([self.known.keys[m] for u in asked for m in u])
        resolutions = []
        for unit in units:
            hits = {}
            for iid in unit:
                hit = entries.get(self.known.keys[iid])
                if (
                    hit is not None
                    and self.outputs.exists(hit.output)
                    and self.volumes.hold(hit.volumes, self.hasher)
                ):
                    hits[iid] = hit.output
            if len(hits) == len(unit):  # a streamed chain is reused whole or not at all
                self.hits.update(hits)
                resolutions.append(REUSABLE)
            else:
                resolutions.append(Resolution(reusable=False, orphans=self._orphans(unit)))
        return resolutions

    def reused(self, iid: InstanceId) -> str:
        """Take the cache's answer for ``iid``: its output's digest."""
        digest = self.hits.pop(iid)
        self.known.outputs[iid] = digest
        return digest

    def _key(self, iid: InstanceId) -> str:
        instance = self.graph.instances[iid]
        try:
            inputs = []
            for name, rel in instance.inputs:
                path, info = self.input_path.with_status(rel)
                inputs.append((name, self.hasher.digest(path, info=info)))
            # (checked by whoever handed them over; part of a committed output is known by
            # that output's digest: never read again)
            for path, target, known in instance.files:
                inputs.append((target, known or self.hasher.digest(path)))
            for path, rel, known in instance.seeds:
                inputs.append((f"seed:{rel}", known or self.hasher.digest(path)))
        except FileNotFoundError as exc:
            raise PlanError(
                f"an input of {iid} is gone since the pipeline file was checked: {exc.filename}",
                step=iid.step,
            ) from None
        except NotData as exc:
            raise PlanError(
                f"an input of {iid} changed since the pipeline file was checked: {exc}",
                step=iid.step,
            ) from None
        upstream = [(m.target, self.known.outputs[m.source]) for m in instance.upstream]
        upstream += self.volumes.read_keys(instance, self.hasher)
        if instance.stdin is not None:  # what streams in is known only by its key
            upstream.append(("stdin", self.known.keys[instance.stdin]))
        image = self.image_ids.get(id(instance.image))
        if image is None:  # (one spec object per step: its key is worked out once)
            image = self.image_ids[id(instance.image)] = self.images[image_key(instance.image)]
        return cache_key(instance, image, inputs, upstream)

    def _orphans(self, unit: Unit) -> dict[InstanceId, Orphan]:
        """A dead run's container for each member (the latest attempt), or none at all: a
        streamed chain is adopted whole."""
        keys = [self.known.keys[m] for m in unit]
        if not all(self.orphans.get(k) for k in keys):
            return {}
        found = {}
        for member, key in zip(unit, keys, strict=True):
            candidates = sorted(self.orphans[key], key=lambda o: o.attempt)
            found[member] = candidates.pop()
            self.orphans[key] = candidates
        return found
