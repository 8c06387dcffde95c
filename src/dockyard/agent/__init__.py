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
streams from other nodes) and dockyard's base modules and node-disk layer
(:data:`SHIPPED`), nothing else: everything under this package imports only those.
"""

from __future__ import annotations

DEFAULT_PORT = 7480
API = "/v1"

# What the agent's image holds of dockyard, as it is in the package: the base modules, the
# node-disk layer and this package. Importing them imports nothing else of dockyard (a test
# runs them alone); ``dockyard/__init__`` is lazy, so it ships unchanged.
SHIPPED = ("__init__.py", "errors.py", "home.py", "names.py", "lifecycles.py", "disk", "agent")
