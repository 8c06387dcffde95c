"""A run on several nodes, on the fake runtime: a node that goes down has its attempts rerun
elsewhere without using a retry, and work that fits no node that is up waits for one.

The same happens on a real Swarm in tests/integration/test_swarm_docker.py; here the run
loop's part (watching the nodes, telling the planner) is pinned down without Docker.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dockyard.execution import Executor
from dockyard.runtime.base import HostCapacity, Node
from dockyard.spec import load_pipeline
from dockyard.storage.store import Store
from dockyard.testing import FakeRuntime, Fault
from tests.unit.test_engine_fake import IMAGE
from tests.unit.test_recovery import write

GIB = 1024**3


def cluster(*cpus: float) -> FakeRuntime:
    runtime = FakeRuntime(
        cluster=[Node(f"n{i}", f"node{i}", HostCapacity(c, 4 * GIB)) for i, c in enumerate(cpus)]
    )
    runtime.add_image(IMAGE)
    return runtime


def run(path: Path, runtime: FakeRuntime) -> Store:
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    Executor(pf, runtime, store, new_id=lambda: "r1").run()
    return store


def test_a_node_that_goes_down_has_its_attempt_rerun_on_another_without_a_retry(
    tmp_path: Path,
) -> None:
    runtime = cluster(1, 1)
    runtime.inject("w[a]", Fault(node_down=True))
    path = write(
        tmp_path,
        f"""
version: 1
name: two-nodes
defaults: {{image: {IMAGE}, resources: {{cpus: 1, memory: 16m}}, retries: 0}}
steps:
  w: {{scatter: {{v: [a, b]}}, command: "echo ${{v}} > /out/v"}}
""",
    )
    store = run(path, runtime)
    attempts = store.attempts("r1", "w[a]")
    assert [(a.state, a.reason) for a in attempts] == [("lost", "lost"), ("succeeded", "exited")]
    assert attempts[0].node != attempts[1].node  # not again on the node that is down
    assert "went down" in (attempts[0].detail or "")
    assert store.run("r1").state == "succeeded"


def test_work_that_fits_only_a_node_that_is_down_waits_for_it_to_return(tmp_path: Path) -> None:
    runtime = cluster(2, 1)  # only n0 has room for a 2-CPU step
    runtime.inject("big", Fault(node_down=True))
    path = write(
        tmp_path,
        f"""
version: 1
name: wait-for-node
defaults: {{image: {IMAGE}, resources: {{cpus: 2, memory: 16m}}, retries: 0}}
steps:
  big: {{command: "echo done > /out/v"}}
""",
    )
    back = threading.Timer(0.5, runtime.set_node_state, args=("n0", "ready"))
    back.start()
    try:
        store = run(path, runtime)
    finally:
        back.cancel()
    assert [(a.state, a.node) for a in store.attempts("r1", "big")] == [
        ("lost", "n0"),
        ("succeeded", "n0"),
    ]
    assert store.run("r1").state == "succeeded"
