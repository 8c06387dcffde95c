#!/usr/bin/env bash
# A real Docker Swarm on this machine, for tests, benchmarks and trying --backend swarm.
#
#   scripts/swarm-local.sh up [N]   # N nodes (default 3); prints "NAME SOCKET PIDFILE" per node,
#                                   # the manager first
#   eval "$(scripts/swarm-local.sh env)"   # points dockyard at it (DOCKER_HOST, the nodes'
#                                   # engines, DOCKYARD_BACKEND=swarm, ...)
#   scripts/swarm-local.sh down     # removes everything, also after a failed `up`
#
# Each node is its own dockerd (own data-root, exec-root, pidfile and socket) in network,
# mount and host-name namespaces of its own, wired to a bridge in yet another namespace;
# the first node is the manager. Needs root, iproute2 and util-linux (unshare, nsenter).
# The state lives under $DOCKYARD_SWARM_ROOT (default /tmp/dockyard-swarm). `up` returns
# when its output is captured or piped (the daemons it leaves running hold none of it).
#
# The code is dockyard.testing.swarm (see there for how and why).
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=${PYTHON:-python3}
exec "$python" -m dockyard.testing.swarm "$@"
