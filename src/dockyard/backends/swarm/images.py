"""Images on every node of a Swarm, with no registry.

dockyard makes a pipeline's images (build, ``docker import`` of a Debian root) on the
manager; a node that is to run one gets it the way ``docker save | docker load`` would,
from the manager's engine to the node's engine, once per node and image, just before the
first task that needs it is created. The node's engine is reached at the address given for
it in ``DOCKYARD_SWARM_ENGINES`` (whitespace-separated engine URLs, e.g. ``unix://…`` or a
``tcp://`` address with TLS set up as for ``DOCKER_HOST``); each is asked which Swarm node
it is. A node with no address given is expected to get its images itself (from a registry,
for published images): its task is created as is, and a missing image is then the node's
refusal, reported for that attempt.

Why not a registry service: a registry's image must itself reach the nodes, an insecure
registry needs each node's daemon configured by hand, and this kernel has no IPVS for a
published port's routing mesh. Copying image layers engine to engine needs none of that.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from dockyard.backends.docker_client import DockerClient
from dockyard.errors import DockyardError, EngineUnavailable, ImageError, RuntimeFailure

if TYPE_CHECKING:
    from dockyard.backends.docker_images import DockerImages

ENVIRONMENT = "DOCKYARD_SWARM_ENGINES"


class NodeEngines:
    """The engines of the Swarm's nodes that were given (``DOCKYARD_SWARM_ENGINES``), by
    Swarm node id: where images are copied to, and where a task's container is asked what
    its task status does not say."""

    def __init__(self, urls: list[str] | None = None):
        if urls is None:
            urls = os.environ.get(ENVIRONMENT, "").split()
        self._lock = threading.Lock()
        self._unresolved = list(urls)  # engines not yet reached (asked again on a miss)
        self._engines: dict[str, DockerClient] = {}

    def engine_of(self, node: str) -> DockerClient | None:
        """The given engine that is ``node``, connecting to those not reached yet (a node
        that joined or came back since has a new id; an engine that does not answer is
        tried again next time)."""
        with self._lock:
            if node in self._engines or not self._unresolved:
                return self._engines.get(node)
            for url in list(self._unresolved):
                try:
                    client = DockerClient(url)
                except EngineUnavailable:
                    continue
                try:
                    with client._translated(f"reading the engine info of {url}"):
                        info = client.api.info()
                except DockyardError:
                    client.close()
                    continue
                node_id = str((info.get("Swarm") or {}).get("NodeID") or "")
                if not node_id:
                    client.close()
                    self._unresolved.remove(url)
                    raise ImageError(f"{ENVIRONMENT}: the engine at {url} is not a node of a swarm")
                self._engines[node_id] = client
                self._unresolved.remove(url)
            return self._engines.get(node)

    def close(self) -> None:
        with self._lock:
            engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.close()


class NodeImages:
    """Copies of the manager's images on the nodes, made once per node and image."""

    def __init__(self, manager: DockerImages, engines: NodeEngines):
        self.manager = manager
        self.engines = engines
        self._lock = threading.Lock()
        self._present: set[tuple[str, str]] = set()
        self._copying: dict[tuple[str, str], threading.Lock] = {}

    def ensure(self, image: str, node: str) -> None:
        """Make sure ``image`` (an id or a reference the manager knows) is on ``node``.
        A node's engine that fails is that attempt's failure (:class:`RuntimeFailure`),
        never a wait for the manager."""
        key = (node, image)
        with self._lock:
            if key in self._present:
                return
            copying = self._copying.setdefault(key, threading.Lock())
        engine = self.engines.engine_of(node)
        if engine is None:
            return  # nothing known to copy to: the node pulls, or refuses the task
        with copying:  # one copy per node and image, however many tasks wait for it
            with self._lock:
                if key in self._present:
                    return
            try:
                with engine._translated(f"looking for {image} on node {node[:12]}", ImageError):
                    present = _has_image(engine, image)
                if not present:
                    self._copy(image, engine, node)
            except EngineUnavailable as exc:
                raise RuntimeFailure(
                    f"copying image {image} to node {node[:12]}: {exc.message}"
                ) from exc
            with self._lock:
                self._present.add(key)

    def _copy(self, image: str, engine: DockerClient, node: str) -> None:
        with self.manager._translated(f"saving image {image} on the manager", ImageError):
            tarball = self.manager.api.get_image(image)
            with engine._translated(f"loading image {image} on node {node[:12]}", ImageError):
                for _ in engine.api.load_image(tarball, quiet=True):
                    pass
        with engine._translated(f"looking for image {image} on node {node[:12]}", ImageError):
            if not _has_image(engine, image):
                raise ImageError(f"image {image} was sent to node {node[:12]} but is not there")


def _has_image(engine: DockerClient, image: str) -> bool:
    import docker.errors

    try:
        engine.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return False
    return True
