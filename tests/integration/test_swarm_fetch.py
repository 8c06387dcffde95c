"""An output fetched from another node's agent, on a real three-node Swarm: checked in
the same pass as it is written (issue 24), it is the tree its producer's node keeps:
digest, permission bits, links, holes, and the record a next fetch is bounded by."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from dockyard.agent import layout
from dockyard.backends.swarm.agents import ROOT_ENV, deploy
from dockyard.backends.swarm.runtime import SwarmRuntime
from dockyard.disk import keeping
from dockyard.disk.sealing import tree_digest
from dockyard.testing.swarm import LocalSwarm, SwarmNode
from tests.conftest import BUSYBOX_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.swarm]

# Folders side by side and nested, modes of each kind, links, an empty file, a 3 MiB file
# (pieces of more than one read), one with zeros inside, one with a hole and 1,000 small ones.
SCRIPT = """
set -e
cd /out
mkdir -p b/x/y a z
head -c 3145728 /dev/urandom > big
head -c 65536 /dev/urandom > zeros; head -c 196608 /dev/zero >> zeros
head -c 70000 /dev/urandom >> zeros
echo end > sparse; truncate -s 5000000 sparse; echo tail >> sparse
: > empty
echo run > a/tool; chmod 751 a/tool
echo private > b/x/secret; chmod 600 b/x/secret
chmod 750 b/x
ln -s ../big a/link; ln -s nowhere dangling
i=0; while [ $i -lt 1000 ]; do echo $i > z/f$i; i=$((i+1)); done
"""


def _modes(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
        for path in sorted(root.rglob("*"))
    }


def test_a_tree_fetched_between_agents_is_the_one_its_node_keeps(
    on_swarm: LocalSwarm, swarm_runtime: SwarmRuntime
) -> None:
    pool = deploy(swarm_runtime, print)
    a, b = sorted(pool.addresses())[:2]
    staging = {"project": "fetch", "run": uuid.uuid4().hex[:8], "name": "out"}
    made = pool.call(a, "staging/make", staging)
    [node] = [n for n in on_swarm.nodes if _node_id(n) == a]
    api = node.engine.client()
    try:
        container = api.create_container(
            BUSYBOX_IMAGE,
            ["sh", "-c", SCRIPT],
            host_config=api.create_host_config(binds=[f"{made['path']}:/out"]),
        )["Id"]
        api.start(container)
        assert api.wait(container, timeout=300)["StatusCode"] == 0, api.logs(container)
        api.remove_container(container)
    finally:
        api.close()
    kept = pool.call(a, "staging/commit", staging)
    digest = str(kept["digest"])
    body = {"digest": digest, "source": pool.addresses()[a], "source_node": a}
    fetched = Path(pool.call(b, "objects/fetch", body)["path"])

    root = Path(os.environ[ROOT_ENV])
    source = Path(layout.object_dir(str(root), a, digest))
    assert fetched == Path(layout.object_dir(str(root), b, digest))
    assert tree_digest(fetched)[0] == digest
    assert _modes(fetched) == _modes(source)
    assert os.readlink(fetched / "a" / "link") == "../big"
    assert (fetched / "big").read_bytes() == (source / "big").read_bytes()
    assert (fetched / "sparse").stat().st_size == 5000005
    assert (fetched / "sparse").stat().st_blocks * 512 < 1 << 20  # (the hole stayed one)
    record = keeping.read_record(root / b / "outputs", digest)
    assert record == keeping.Bounds(kept["size"], kept["data"], kept["files"], kept["entries"])


def _node_id(node: SwarmNode) -> str:
    api = node.engine.client()
    try:
        return str(api.info()["Swarm"]["NodeID"])
    finally:
        api.close()
