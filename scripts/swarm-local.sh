#!/usr/bin/env bash
# A real Docker Swarm on this machine, for tests, benchmarks and trying --backend swarm.
#
#   scripts/swarm-local.sh up [N]   # N nodes (default 3); prints "NAME SOCKET PIDFILE" per node,
#                                   # the manager first
#   scripts/swarm-local.sh down     # removes everything, also after a failed `up`
#
# Each node is its own dockerd (own data-root, exec-root, pidfile and socket) in network,
# mount and host-name namespaces of its own, wired to a bridge in yet another namespace;
# the first node is the manager. Needs root, iproute2 and util-linux (unshare, nsenter).
# The state lives under $DOCKYARD_SWARM_ROOT (default /tmp/dockyard-swarm). To point
# dockyard at it:
#
#   export DOCKER_HOST=unix://<the manager's SOCKET>
#   export DOCKYARD_SWARM_ENGINES="unix://<SOCKET of each node> ..."
#   export DOCKYARD_SWARM_NODES_NO_NEW_PRIVILEGES=1   # its nodes run with --no-new-privileges
#   export DOCKYARD_AGENT_ENGINE_SOCKET=/run/docker/engine.sock  # each node's own, for agents
#   dockyard run --backend swarm
#
# The code is dockyard.testing.swarm (see there for how and why).
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=${PYTHON:-python3}
exec "$python" -m dockyard.testing.swarm "$@"
