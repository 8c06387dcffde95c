"""The node agent: dockyard's data plane on a cluster.

One agent runs on every node of a Swarm (a ``global`` service that dockyard deploys). It
keeps, on its node, the committed outputs and the inputs that containers there read (a
content-addressed store: a tree is found by its digest), makes the folders an attempt
writes its ``/out`` into and seals and commits them there, and fetches the trees a
consumer needs from the agent that holds them, verified by digest before they are used.
Every request and every answer is authenticated with the cluster's key
(:mod:`dockyard.agent.auth`); nothing unauthenticated reads or writes through an agent.

It also keeps the swarm's named volumes (:mod:`.node_volumes`): it serves Docker's volume
plugin protocol on its node (:mod:`.plugin`), takes and gives back the volumes' leases
(:mod:`.leases`, kept in Swarm's store) and sends snapshots between nodes.

The agent's image holds the Python standard library, pydantic (which checks the volume
streams from other nodes) and a handful of dockyard's modules (:data:`MODULES`), nothing
else: everything under this package imports only those.
"""

from __future__ import annotations

DEFAULT_PORT = 7480
API = "/v1"

# What the agent's image holds of dockyard (paths under src/dockyard); the package's own
# __init__ is replaced by an empty one there.
MODULES = (
    "errors.py",
    "home.py",
    "storage/__init__.py",
    "storage/safefs.py",
    "storage/safecopy.py",
    "storage/content_digest.py",
    "storage/tree_limits.py",
    "storage/tree_digests.py",
    "storage/outputs.py",
    "storage/ports.py",
    "storage/node_disk.py",
    "agent/__init__.py",
    "agent/__main__.py",
    "agent/auth.py",
    "agent/nonces.py",
    "agent/layout.py",
    "agent/trees.py",
    "agent/tree_wire.py",
    "agent/client.py",
    "agent/server.py",
    "agent/gate.py",
    "agent/head.py",
    "agent/quietlog.py",
    "agent/pace.py",
    "agent/object_routes.py",
    "agent/chunked.py",
    "agent/node_store.py",
    "agent/engine.py",
    "agent/frames.py",
    "agent/leases.py",
    "agent/node_volumes.py",
    "agent/volume_records.py",
    "agent/replication.py",
    "agent/plugin.py",
    "agent/volume_routes.py",
    "spec/names.py",
    "storage/volumes.py",
    "storage/volume_copy.py",
    "storage/volume_stream/__init__.py",
    "storage/volume_stream/format.py",
    "storage/volume_stream/receive.py",
    "storage/volume_stream/send.py",
)
