"""The node-disk layer: what dockyard keeps on a node's disk, shared by the orchestrator
on one machine and by the node agents on a cluster. Never-follow file walking and copying,
content digests, sealing and keeping outputs, named volumes' snapshots and their streams.
It imports nothing of dockyard above the base modules (errors, home, names): the agent's
image ships it as it is."""
